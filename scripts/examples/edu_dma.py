# ruff: noqa: F821  (bar0, bus_master, dma_alloc are provided by `vfioctl run`)
"""Bring-up script for QEMU's edu device: DMA a pattern RAM -> device -> RAM and check it.

    vfioctl run scripts/examples/edu_dma.py DEVICE [LENGTH]

`vfioctl run` provides: dev, bar0, config, dma_alloc, irq, bus_master, session.
"""
import sys
import time

EDU_ID, DMA_SRC, DMA_DST, DMA_CNT, DMA_CMD = 0x00, 0x80, 0x88, 0x90, 0x98
DMA_START, DMA_TO_RAM, DMA_IRQ = 0x1, 0x2, 0x4
EDU_BUF = 0x40000          # the device's internal 4 KiB buffer
# edu's DMA buffer is 4 KiB (QEMU 7.2 aborted the VM on a DMA ending exactly at its end;
# QEMU 10, the bed's, copies all 4096 bytes).
EDU_MAX = 4096
EDU_DMA_MASK = 1 << 28     # edu clamps DMA addresses to 28 bits


def dma(src, dst, count, to_ram, timeout=10.0):
    bar0.write(DMA_SRC, src, 8)
    bar0.write(DMA_DST, dst, 8)
    bar0.write(DMA_CNT, count, 8)
    bar0.write(DMA_CMD, DMA_START | (DMA_TO_RAM if to_ram else 0), 8)
    deadline = time.monotonic() + timeout
    while bar0.read(DMA_CMD, 8) & DMA_START:
        if time.monotonic() > deadline:
            raise SystemExit("edu: DMA did not complete")
        time.sleep(0.005)


length = int(sys.argv[1], 0) if len(sys.argv) > 1 else 2048
if not 1 <= length <= EDU_MAX:
    raise SystemExit(f"length {length}: edu DMA takes 1..{EDU_MAX} bytes")
assert bar0.read(EDU_ID) == 0x010000ED, "not an edu device"
bus_master(True)
src = dma_alloc(4096, limit=EDU_DMA_MASK)
dst = dma_alloc(4096, limit=EDU_DMA_MASK)
pattern = bytes((i * 7 + 3) & 0xFF for i in range(length))
src.write(pattern)
dma(src.iova, EDU_BUF, length, to_ram=False)
dma(EDU_BUF, dst.iova, length, to_ram=True)
ok = dst.read(0, length) == pattern
print(f"edu DMA {length} bytes: RAM@{src.iova:#x} -> device@{EDU_BUF:#x} -> RAM@{dst.iova:#x}: "
      f"{'intact' if ok else 'CORRUPTED'}")
sys.exit(0 if ok else 1)
