#!/usr/bin/env bash
# Hardware CI with vfioctl on a self-hosted runner whose NIC keeps the runner online on its PF:
# create a VF, bind it to vfio-pci, prove the kernel's rules on it (probe), have a device with a
# DMA driver prove DMA through the IOMMU (selftest), run the user's pytest suite on the VF
# through vfioctl's pytest plugin, and always give everything back.
#
#   hw-test.sh setup|probe|selftest|tests|restore|all
#
# Environment: PF (the NIC's PF, e.g. 0000:03:00.0; required), TESTS (the pytest suite;
# default tests/hw), SELFTEST_DEVICE (a device vfioctl has a DMA driver for: edu, an igb PF;
# default: skip the step, saying so), OUT (where reports go; default .), SUDO (default sudo; empty
# when already root). The VF's address is kept in $OUT/vf between steps.
set -euo pipefail

: "${PF:?set PF to the address of the NIC PF}"
TESTS=${TESTS:-tests/hw}
OUT=${OUT:-.}
SUDO=${SUDO-sudo}
VFIOCTL=${VFIOCTL:-vfioctl}

vf() { cat "$OUT/vf"; }

setup() {
    $SUDO $VFIOCTL sriov "$PF" --numvfs 1 --no-autoprobe --json > "$OUT/sriov.json"
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vfs"][0]["bdf"])' \
        "$OUT/sriov.json" > "$OUT/vf"
    $SUDO $VFIOCTL bind "$(vf)"
}

probe() {
    $SUDO $VFIOCTL probe "$(vf)" --json > "$OUT/probe.json"
}

selftest() {
    if [ -z "${SELFTEST_DEVICE:-}" ]; then
        echo "selftest: no SELFTEST_DEVICE set (a VF has no DMA driver in vfioctl); skipped"
        return 0
    fi
    $SUDO $VFIOCTL bind "$SELFTEST_DEVICE"
    $SUDO $VFIOCTL selftest "$SELFTEST_DEVICE" --json > "$OUT/selftest.json"
}

tests() {
    $SUDO python3 -m pytest "$TESTS" --vfio-device "$(vf)" --junitxml="$OUT/hw-junit.xml"
}

restore() {
    # whatever happened before: every device vfioctl bound goes back, then the VF goes
    $SUDO $VFIOCTL restore
    $SUDO $VFIOCTL sriov "$PF" --numvfs 0
    echo 1 | $SUDO tee "/sys/bus/pci/devices/$PF/sriov_drivers_autoprobe" > /dev/null
}

case "${1:-all}" in
    setup|probe|selftest|tests|restore) "$1" ;;
    all) trap restore EXIT; setup; probe; selftest; tests ;;
    *) echo "usage: hw-test.sh setup|probe|selftest|tests|restore|all" >&2; exit 2 ;;
esac
