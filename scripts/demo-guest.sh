#!/usr/bin/env bash
# Runs inside the test-bed VM (scripts/demo.sh boots it): what a user sees on a VFIO host.
set -euo pipefail
py=${VFIOCTL_PYTHON:-python3}   # scripts/vm-run passes the host's interpreter
vfioctl() { echo; echo "\$ vfioctl $*"; "$py" -m vfioctl "$@"; }
# The test bed's heartbeats beside the demo: QEMU's TCG now and then loses a halted CPU's wake-up
# (README: the test bed), and they nudge it (and pulse the file scripts/vm-run --heartbeat
# watches, which nudges from outside if every CPU stopped)
"$py" tests/vm/hangwatch.py &
heartbeats=$!
trap 'kill "$heartbeats"; wait "$heartbeats" || true' EXIT

edu=$("$py" -c 'import vfioctl.discovery as d; print(d.list_devices("1234:11e8")[0].bdf)')
vfioctl doctor || true
vfioctl list
vfioctl bind "$edu"
vfioctl doctor "$edu"
vfioctl probe "$edu"
vfioctl info "$edu"
vfioctl read "$edu" bar0 0x0                         # edu's ID register
vfioctl write "$edu" bar0 0x4 0x12345678             # liveness: reads back inverted
vfioctl read "$edu" bar0 0x4 --mmap
vfioctl dump "$edu" config 0 64
modes=$("$py" -m vfioctl doctor "$edu" --json | "$py" -c 'import json, sys; print(" ".join(json.load(sys.stdin)["usable_modes"]))')
for mode in $modes; do                              # the same read in every IOMMU mode here
    vfioctl read "$edu" bar0 0x0 --iommu-mode "$mode" --json
done
vfioctl run scripts/examples/edu_dma.py "$edu" 4096
vfioctl unbind "$edu"
