#!/usr/bin/env bash
# Build (or fetch) one kernel of the test bed and cache it.
#
#   scripts/build-kernel.sh [NAME]        NAME: 6.12 (default), 7 (alias: 7.x, or its version,
#                                         e.g. 7.3), debian
#
#   6.12    Debian's linux-source-6.12 (trixie, then bookworm-backports), tinyconfig +
#           kernel.config + kernel-6.12.config: iommufd + cdev and the legacy type1 container.
#   7       the newest linux-source-7.* in trixie-backports, tinyconfig + kernel.config +
#           kernel-7.config: iommufd + cdev, and iommufd's compat container.
#   debian  Debian 13's own signed kernel image, the newest linux-image-6.12.*+deb13-amd64,
#           unmodified, with its modules (no iommufd: legacy group + type1 container only).
#
# Packages come through a private apt configuration that reuses the URI of this machine's own
# Debian source entry (scripts/debian-apt.sh; no registry host is named here).
# Cache: $VFIOCTL_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/vfioctl)/kernel/<version>-<hash>/
#        with bzImage (debian: root/boot/vmlinuz-V + root/lib/modules/V), headers/ (built kernels), config, VERSION, NAME and a
#        COMPLETE marker; an entry is staged and published by rename, so an interrupted build
#        never looks valid. The hash covers the fragments and this builder's recipe.
# Prints the cache directory on its last line of stdout; everything else goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
name=${1:-6.12}
jobs=${VFIOCTL_JOBS:-$(nproc)}
builder=builder-v2

log() { printf 'build-kernel[%s]: %s\n' "$name" "$*" >&2; }
die() { printf 'build-kernel[%s]: error: %s\n' "$name" "$*" >&2; exit 1; }

. "$here/debian-apt.sh"
cache=$vfioctl_cache

case "$name" in
    6.12) suites="trixie bookworm-backports"; pattern='^linux-source-6\.12$'
          fragments=("$here/kernel.config" "$here/kernel-6.12.config") ;;
    7|7.x|7.*) suites="trixie-backports"; pattern='^linux-source-7\.[0-9]+$'
          fragments=("$here/kernel.config" "$here/kernel-7.config") ;;
    debian) suites="trixie"; pattern='^linux-image-6\.12\.[0-9]+\+deb13-amd64$'
          fragments=() ;;
    *) die "unknown kernel '$name': use 6.12, 7 or debian" ;;
esac

tools=(apt-get dpkg-deb)
[ "$name" = debian ] || tools+=(make gcc flex bison bc rsync xz)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || die "'$tool' is missing: run scripts/install-deps.sh (as root)"
done

# --- which package and version? -----------------------------------------------------------------
# Offline-friendly: if the lists cannot be refreshed, fall back to the newest downloaded .deb.
private_apt "kernel-$name" $suites || die "cannot locate the machine's Debian mirror in /etc/apt"
read -r package version < <(newest_package "$pattern" || true) || true
if [ -z "${version:-}" ]; then
    deb=$(ls "$aptdir"/archives/*.deb 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$deb" ] || die "no package matching $pattern in suites '$suites' of the machine's Debian mirror"
    package=$(dpkg-deb -f "$deb" Package)
    version=$(dpkg-deb -f "$deb" Version)
    log "offline: using the already downloaded $package $version"
fi
if [ "$name" = debian ]; then
    kver=${package#linux-image-}                  # 6.12.117+deb13-amd64
    label=debian
else
    kver=${package#linux-source-}                 # 6.12, 7.3
    label=$kver
fi

[ "$name" = debian ] && builder=stock-v4
# the key: the fragments' options (sorted: moving a line between fragments changes nothing)
key="${version}-$( (cat "${fragments[@]}" /dev/null | grep -v '^[[:space:]]*\(#\|$\)' | sort;
                    echo "$builder $name") | sha256sum | cut -c1-16)"
out="$cache/kernel/$key"
if [ -f "$out/COMPLETE" ]; then
    log "cached kernel $key"
    echo "$out"
    exit 0
fi

# --- fetch ----------------------------------------------------------------------------------
deb=$(ls "$aptdir/archives/${package}_${version//:/%3a}_"*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
    log "downloading $package $version"
    (cd "$aptdir/archives/partial" && apt-get "${apt_opts[@]}" -q download "$package=$version" >&2)
    mv "$aptdir/archives/partial/${package}_"*.deb "$aptdir/archives/"
    deb=$(ls "$aptdir/archives/${package}_"*.deb | head -n 1)
fi

stage="$cache/kernel/.stage-$key-$$"
trap 'rm -rf "$stage"' EXIT
rm -rf "$stage"
mkdir -p "$stage"

publish() {
    echo "$version" > "$stage/VERSION"
    echo "$label" > "$stage/NAME"     # what the run calls it: 6.12, 7.3, debian
    date -u +%FT%TZ > "$stage/COMPLETE"
    rm -rf "$out"
    mv "$stage" "$out"
    log "cached kernel $key"
    echo "$out"
}

if [ "$name" = debian ]; then
    # The stock image as Debian ships it, laid out as a small root: root/boot/vmlinuz-V and
    # root/lib/modules/V. virtme-ng walks up from the image to the nearest lib/modules and links
    # it into the guest's /lib/modules (virtme_link_mods), so nothing is written to the host's
    # own /lib/modules.
    log "unpacking $package $version"
    dpkg-deb -x "$deb" "$stage/pkg"
    mods=$(find "$stage/pkg" -maxdepth 4 -type d -path '*lib/modules/*' -name "$kver" | head -n 1)
    [ -n "$mods" ] || die "$deb holds no lib/modules/$kver"
    mkdir -p "$stage/root/lib/modules" "$stage/root/boot"
    mv "$mods" "$stage/root/lib/modules/$kver"
    cp "$stage/pkg/boot/vmlinuz-$kver" "$stage/root/boot/vmlinuz-$kver"
    cp "$stage/pkg/boot/config-$kver" "$stage/config"
    rm -rf "$stage/pkg"
    depmod -b "$stage/root" -a "$kver"
    grep -q '^# CONFIG_IOMMUFD is not set' "$stage/config" \
        || log "note: this Debian kernel has CONFIG_IOMMUFD; the bed expects it without"
    publish
    exit 0
fi

# --- unpack the source --------------------------------------------------------------------------
# An interrupted build of the same key leaves its tree (marked UNPACKED once fully unpacked):
# it is reused, and make rebuilds only what is missing.
work="$cache/build/$key"
if [ ! -f "$work/UNPACKED" ]; then
    rm -rf "$work"
    mkdir -p "$work"
    log "unpacking $package $version"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards '*.tar.xz'
    tarball=$(find "$work" -name 'linux-source-*.tar.xz' | head -n 1)
    [ -n "$tarball" ] || die "$deb holds no linux-source tarball"
    tar -xJf "$tarball" -C "$work"
    rm -rf "$work/usr"
    touch "$work/UNPACKED"
else
    log "resuming the interrupted build in $work"
fi
src=$(find "$work" -maxdepth 1 -type d -name 'linux-source-*' | head -n 1)

# --- configure: tinyconfig + fragments, then prove the fragments survived ----------------------
make_k() { make -C "$src" ARCH=x86_64 "$@" >&2; }
log "configuring (tinyconfig + $(for f in "${fragments[@]}"; do basename "$f"; done | tr '\n' ' '))"
make_k -s tinyconfig
cat "${fragments[@]}" > "$src/kernel/configs/vfioctl.config"
make_k -s vfioctl.config
make_k -s olddefconfig

missing=()
while IFS= read -r line; do
    case "$line" in ''|'#'*) continue ;; esac
    opt=${line%%=*}
    want=${line#*=}
    if [ "$want" = n ]; then
        grep -qx "# $opt is not set" "$src/.config" || grep -qx "$opt=n" "$src/.config" \
            || ! grep -q "^$opt=" "$src/.config" || missing+=("$opt")
    else
        grep -qx "$line" "$src/.config" || missing+=("$opt")
    fi
done < <(cat "${fragments[@]}")
if [ "${#missing[@]}" -gt 0 ]; then
    die "these options of the fragments did not survive olddefconfig: ${missing[*]}"
fi

# --- build ----------------------------------------------------------------------------------------
log "building bzImage with $jobs jobs (5-10 minutes on 2 cores)"
start=$(date +%s)
make_k -s -j"$jobs" bzImage
rm -rf "$work/headers"
make_k -s headers_install INSTALL_HDR_PATH="$work/headers"
log "built in $(( $(date +%s) - start )) s"
# the VFIO selftest library of this source, for reading (never built by the suite)
if [ -d "$src/tools/testing/selftests/vfio" ]; then
    mkdir -p "$stage/selftests"
    cp -r "$src/tools/testing/selftests/vfio" "$stage/selftests/"
fi

cp "$src/arch/x86/boot/bzImage" "$stage/bzImage"
cp "$src/.config" "$stage/config"
mv "$work/headers" "$stage/headers"
publish
rm -rf "$work"
