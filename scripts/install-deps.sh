#!/usr/bin/env bash
# Install what vfioctl's tests and demo need: Debian packages (QEMU, udev for virtme-ng's exit
# status, the kernel build tools) and the Python package with its test extras.
# Idempotent and quick when everything is there already. Needs root for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(qemu-system-x86 udev rsync flex bison bc make gcc libc6-dev libelf-dev libssl-dev xz-utils
      cpio kmod e2fsprogs iproute2)
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: these Debian packages are missing: ${missing[*]}" >&2
        echo "install-deps: run this script as root (or: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "install-deps: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]' >&2
echo "install-deps: ok" >&2
