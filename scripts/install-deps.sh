#!/usr/bin/env bash
# Install what vfioctl's tests and demo need: Debian packages (QEMU 10, udev for virtme-ng's exit
# status, busybox-static for booting Debian's stock kernel, the kernel build tools) and the Python
# package with its test extras.
# QEMU: when the machine's is older than 8 (bookworm ships 7.2, whose edu and e1000e models have
# bugs and which has no igb), qemu-system-x86 comes from the suite bookworm-backports through a
# private apt configuration that reuses this machine's own Debian URI (scripts/debian-apt.sh).
# Idempotent and quick when everything is there already. Needs root for apt.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)/scripts

debs=(udev rsync flex bison bc make gcc libc6-dev libelf-dev libssl-dev xz-utils cpio kmod
      e2fsprogs iproute2 busybox-static valgrind)
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

qemu_major() {
    command -v qemu-system-x86_64 >/dev/null || { echo 0; return; }
    qemu-system-x86_64 --version | awk 'NR == 1 { split($4, v, "."); print v[1] + 0 }'
}
need_qemu=0
[ "$(qemu_major)" -ge 8 ] || need_qemu=1

if [ "${#missing[@]}" -gt 0 ] || [ "$need_qemu" = 1 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        [ "${#missing[@]}" -gt 0 ] && echo "install-deps: these Debian packages are missing: ${missing[*]}" >&2
        [ "$need_qemu" = 1 ] && echo "install-deps: QEMU 8 or newer is missing (qemu-system-x86 from bookworm-backports)" >&2
        echo "install-deps: run this script as root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: apt-get install ${missing[*]}" >&2
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
if [ "$need_qemu" = 1 ]; then
    . "$here/debian-apt.sh"
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    private_apt qemu "$codename" "$codename-updates" "$codename-backports" \
        || { echo "install-deps: cannot locate the machine's Debian mirror in /etc/apt" >&2; exit 1; }
    echo "install-deps: apt-get install -t $codename-backports qemu-system-x86 (QEMU 10)" >&2
    apt-get "${apt_opts[@]}" install -y -q --no-install-recommends -t "$codename-backports" \
        qemu-system-x86 >&2
    [ "$(qemu_major)" -ge 8 ] || { echo "install-deps: QEMU is still older than 8 after the install" >&2; exit 1; }
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]' >&2
# the optional extension (vfioctl/_speedups.c): pip skips it quietly when it cannot build it
python3 -c 'import vfioctl._speedups' 2>/dev/null || echo "install-deps: vfioctl's optional" \
    "extension was not built (no C compiler or no Python headers): pure-Python paths, and the" \
    "VM suite's test_the_suite_runs_the_compiled_paths fails" >&2
echo "install-deps: ok ($(qemu-system-x86_64 --version | head -n 1))" >&2
