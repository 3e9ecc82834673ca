# Sourced by the bed's scripts: a private apt configuration that reuses the URI of this machine's
# own Debian source entry with other suites (trixie, trixie-backports, bookworm-backports, ...).
# It never touches /etc/apt: lists and downloads live under $VFIOCTL_CACHE/apt-<name>/.
# No registry host is named here; the URI is read from /etc/apt.
#
#   . scripts/debian-apt.sh
#   private_apt NAME SUITE...      # sets apt_opts=(...) and runs apt-get update (quietly)
#   apt-get "${apt_opts[@]}" download PKG=VERSION

vfioctl_cache=${VFIOCTL_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/vfioctl}

debian_uri() {
    local f uri
    # deb822 entries: the first URIs line whose path ends in /debian (not debian-security)
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' "$f")
        [ -n "$uri" ] && { echo "${uri%/}"; return; }
    done
    # one-line entries
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1 == "deb" || $1 == "deb-src" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\/.*\/debian\/?$/) { print $i; exit } }' "$f")
        [ -n "$uri" ] && { echo "${uri%/}"; return; }
    done
    return 1
}

# private_apt NAME SUITE...: a private source list for SUITES (component main), refreshed at most
# once an hour; sets the array apt_opts and aptdir. Returns 1 if no Debian entry was found; an
# update that fails (offline) leaves the old lists in place and returns 0 with a warning.
private_apt() {
    local name=$1 uri keyring suite stamp
    shift
    aptdir="$vfioctl_cache/apt-$name"
    mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial"
    apt_opts=(-o "Dir::Etc::SourceList=$aptdir/sources.list" -o "Dir::Etc::SourceParts=-"
              -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache::Archives=$aptdir/archives"
              -o "APT::Get::List-Cleanup=0" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
    uri=$(debian_uri) || { echo "no Debian source entry found in /etc/apt" >&2; return 1; }
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    : > "$aptdir/sources.list.new"
    for suite in "$@"; do
        echo "deb [signed-by=$keyring] $uri $suite main" >> "$aptdir/sources.list.new"
    done
    stamp="$aptdir/updated"
    if cmp -s "$aptdir/sources.list.new" "$aptdir/sources.list" \
            && [ -n "$(find "$stamp" -mmin -60 2>/dev/null)" ]; then
        rm -f "$aptdir/sources.list.new"
        return 0
    fi
    mv "$aptdir/sources.list.new" "$aptdir/sources.list"
    if apt-get "${apt_opts[@]}" -qq update >&2; then
        touch "$stamp"
    else
        echo "warning: apt update of the private source list ($*) failed; using old lists" >&2
    fi
    return 0
}

# newest_version PATTERN: the newest version of the packages whose names match the anchored
# regular expression PATTERN, as "NAME VERSION"
newest_package() {
    apt-cache "${apt_opts[@]}" search --names-only "$1" 2>/dev/null | awk '{print $1}' \
        | while read -r p; do
            apt-cache "${apt_opts[@]}" show "$p" 2>/dev/null | awk -v p="$p" '/^Version:/ { print p, $2 }'
        done | sort -V -k2 | tail -n 1
}
