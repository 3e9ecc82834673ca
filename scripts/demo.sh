#!/usr/bin/env bash
# The main job, end to end: install vfioctl and what it needs, build (or reuse) the test-bed
# kernel, boot it in QEMU with an emulated IOMMU, and inside it drive QEMU's edu device the way a
# user would: doctor, list, bind, probe, info, read/write, a DMA bring-up script, unbind.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
kernel=$(bash scripts/build-kernel.sh | tail -n 1)
py=$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')
exec "$py" scripts/vm-run --kernel "$kernel" --timeout 600 -- bash scripts/demo-guest.sh
