#!/usr/bin/env bash
# The main job, end to end: install vfioctl and what it needs, build (or fetch, or reuse) a
# kernel of the test bed, boot it in QEMU with an emulated IOMMU, and inside it drive QEMU's edu
# device the way a user would: doctor, list, bind, probe, info, read/write in every IOMMU mode the
# kernel offers, a DMA bring-up script, unbind.
#
#   scripts/demo.sh [--kernel 6.12|7|debian]     (default 6.12; debian: Debian's stock kernel)
set -euo pipefail
cd "$(dirname "$0")/.."
kernel_name=6.12
case "${1:-}" in
    --kernel) kernel_name=${2:?--kernel needs 6.12, 7 or debian} ;;
    --kernel=*) kernel_name=${1#--kernel=} ;;
    "") ;;
    *) echo "demo.sh: unknown option $1 (use --kernel 6.12|7|debian)" >&2; exit 2 ;;
esac
bash scripts/install-deps.sh
kernel=$(bash scripts/build-kernel.sh "$kernel_name" | tail -n 1)
py=$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')
exec "$py" scripts/vm-run --kernel "$kernel" --timeout 600 --heartbeat -- bash scripts/demo-guest.sh
