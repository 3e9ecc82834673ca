#!/usr/bin/env bash
# Build the test-bed guest kernel (bzImage + exported UAPI headers) and cache it.
#
# Source: Debian's linux-source-6.12 package, fetched through a private apt configuration that
# reuses the URI of this machine's own Debian source entry (no registry host is named here).
# Config: tinyconfig + scripts/kernel.config; every option of the fragment must survive olddefconfig.
# Cache:  $VFIOCTL_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/vfioctl)/kernel/<source version>-<config hash>/
#         holds bzImage, headers/, .config and a COMPLETE marker written last: an interrupted build
#         never leaves an entry that looks valid.
# Prints the cache directory on its last line of stdout; everything else goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
fragment="$here/kernel.config"
cache=${VFIOCTL_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/vfioctl}
suites=${VFIOCTL_KERNEL_SUITES:-"trixie bookworm-backports"}
package=linux-source-6.12
jobs=${VFIOCTL_JOBS:-$(nproc)}

log() { printf 'build-kernel: %s\n' "$*" >&2; }
die() { printf 'build-kernel: error: %s\n' "$*" >&2; exit 1; }

for tool in apt-get dpkg-deb make gcc flex bison bc rsync xz; do
    command -v "$tool" >/dev/null || die "'$tool' is missing: run scripts/install-deps.sh (as root)"
done

# --- the machine's own Debian mirror URI -------------------------------------------------------
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

aptdir="$cache/apt"
mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial"
apt_opts=(-o "Dir::Etc::SourceList=$aptdir/sources.list" -o "Dir::Etc::SourceParts=-"
          -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache::Archives=$aptdir/archives"
          -o "APT::Get::List-Cleanup=0" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")

# --- which source version? --------------------------------------------------------------------
# Offline-friendly: if the apt lists cannot be refreshed, fall back to the newest downloaded .deb.
resolve_version() {
    local uri keyring suite
    uri=$(debian_uri) || die "no Debian source entry found in /etc/apt: cannot locate a mirror for $package"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    : > "$aptdir/sources.list"
    for suite in $suites; do
        echo "deb [signed-by=$keyring] $uri $suite main" >> "$aptdir/sources.list"
    done
    if ! apt-get "${apt_opts[@]}" -q update >&2; then
        log "warning: apt update of the private source list failed"
    fi
    apt-cache "${apt_opts[@]}" show "$package" 2>/dev/null \
        | awk '/^Version:/ { print $2 }' | sort -V | tail -n 1
}

version=$(resolve_version || true)
if [ -z "$version" ]; then
    deb=$(ls "$aptdir"/archives/${package}_*.deb 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$deb" ] || die "$package not found in suites '$suites' of the machine's Debian mirror"
    version=$(dpkg-deb -f "$deb" Version)
    log "using the already downloaded $package $version"
fi

key="${version}-$( (cat "$fragment"; echo "builder-v1") | sha256sum | cut -c1-16)"
out="$cache/kernel/$key"
if [ -f "$out/COMPLETE" ]; then
    log "cached kernel $key"
    echo "$out"
    exit 0
fi

# --- fetch and unpack the source --------------------------------------------------------------
deb="$aptdir/archives/${package}_${version}_all.deb"
if [ ! -f "$deb" ]; then
    log "downloading $package $version"
    (cd "$aptdir/archives/partial" && apt-get "${apt_opts[@]}" -q download "$package=$version" >&2)
    mv "$aptdir/archives/partial/${package}_"*"_all.deb" "$deb"
fi

work="$cache/build/$key"
rm -rf "$work"
mkdir -p "$work"
log "unpacking $package $version"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards '*.tar.xz'
tarball=$(find "$work" -name 'linux-source-*.tar.xz' | head -n 1)
[ -n "$tarball" ] || die "$deb holds no linux-source tarball"
tar -xJf "$tarball" -C "$work"
rm -rf "$work/usr"
src=$(find "$work" -maxdepth 1 -type d -name 'linux-source-*' | head -n 1)

# --- configure: tinyconfig + fragment, then prove the fragment survived ------------------------
make_k() { make -C "$src" ARCH=x86_64 "$@" >&2; }
log "configuring (tinyconfig + $(basename "$fragment"))"
make_k -s tinyconfig
cp "$fragment" "$src/kernel/configs/vfioctl.config"
make_k -s vfioctl.config
make_k -s olddefconfig

missing=()
while IFS= read -r line; do
    case "$line" in ''|'#'*) continue ;; esac
    name=${line%%=*}
    want=${line#*=}
    if [ "$want" = n ]; then
        grep -qx "# $name is not set" "$src/.config" || grep -qx "$name=n" "$src/.config" \
            || missing+=("$name")
    else
        grep -qx "$line" "$src/.config" || missing+=("$name")
    fi
done < "$fragment"
if [ "${#missing[@]}" -gt 0 ]; then
    die "these options of $(basename "$fragment") did not survive olddefconfig: ${missing[*]}"
fi

# --- build ------------------------------------------------------------------------------------
log "building bzImage with $jobs jobs (5-25 minutes on 2 cores)"
start=$(date +%s)
make_k -s -j"$jobs" bzImage
make_k -s headers_install INSTALL_HDR_PATH="$work/headers"
log "built in $(( $(date +%s) - start )) s"

# --- publish atomically -----------------------------------------------------------------------
stage="$cache/kernel/.stage-$key-$$"
rm -rf "$stage"
mkdir -p "$stage"
cp "$src/arch/x86/boot/bzImage" "$stage/bzImage"
cp "$src/.config" "$stage/config"
mv "$work/headers" "$stage/headers"
echo "$version" > "$stage/VERSION"
date -u +%FT%TZ > "$stage/COMPLETE"
rm -rf "$out"
mv "$stage" "$out"
rm -rf "$work"
log "cached kernel $key"
echo "$out"
