#!/usr/bin/env python3
"""Benchmark vfioctl's register access against a bare reference, side by side, as ratios.

Runs inside the test-bed VM (it binds edu to vfio-pci):
    scripts/vm-run -- "$(python3 -c 'import sys;print(sys.executable)')" scripts/bench.py

For each path it times N operations through vfioctl and through the bare minimum doing the same
syscall or load, interleaved, 7 rounds, and reports the median ratio vfioctl / reference:
reads of edu's ID register (bar0+0) by pread (os.pread + int.from_bytes), by the mmap
(MappedRegion.read and the typed view regs.u32[0], against a ctypes uint32 at the mmap's
address), and a DMA map + unmap of 4 KiB in the session's mode (against fcntl.ioctl with
prebuilt structs). Absolute times under TCG mean little; ratios from the same run do.
``--json`` prints the rows as JSON; BENCH_N sets N (the suite runs it with a tiny N as a smoke
test: speed is never asserted).
"""
from __future__ import annotations

import ctypes
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vfioctl  # noqa: E402
from vfioctl import binding, discovery  # noqa: E402
from vfioctl.pci import PciDevice  # noqa: E402

N = int(os.environ.get("BENCH_N", "2000"))
ROUNDS = 7


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) / N


ROWS: list[dict] = []
AS_JSON = "--json" in sys.argv


def compare(name: str, ours, ref) -> float:
    ratios, o_times, r_times = [], [], []
    for _ in range(ROUNDS):
        o, r = timed(ours), timed(ref)
        o_times.append(o)
        r_times.append(r)
        ratios.append(o / r)
    ratio = statistics.median(ratios)
    ROWS.append({"operation": name, "vfioctl_us": statistics.median(o_times) * 1e6,
                 "reference_us": statistics.median(r_times) * 1e6, "ratio": ratio})
    if not AS_JSON:
        print(f"{name:34s} vfioctl {statistics.median(o_times) * 1e6:8.2f} us  reference "
              f"{statistics.median(r_times) * 1e6:8.2f} us  ratio {ratio:5.2f}x")
    return ratio


def raw_map_unmap(s, mem):
    """fcntl.ioctl with prebuilt structs: the bare reference of a 4 KiB map + unmap."""
    import fcntl

    from vfioctl import uapi

    addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    iova = 1 << 30
    if s.ioas is not None:
        m = uapi.iommu_ioas_map(size=ctypes.sizeof(uapi.iommu_ioas_map), ioas_id=s.ioas.id,
                                flags=uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_READABLE
                                | uapi.IOMMU_IOAS_MAP_WRITEABLE,
                                user_va=addr, length=4096, iova=iova)
        u = uapi.iommu_ioas_unmap(size=ctypes.sizeof(uapi.iommu_ioas_unmap), ioas_id=s.ioas.id,
                                  iova=iova, length=4096)
        fd, rm, ru = s.iommufd.fd, uapi.IOMMU_IOAS_MAP, uapi.IOMMU_IOAS_UNMAP
    else:
        m = uapi.vfio_iommu_type1_dma_map(argsz=ctypes.sizeof(uapi.vfio_iommu_type1_dma_map),
                                          flags=uapi.VFIO_DMA_MAP_FLAG_READ
                                          | uapi.VFIO_DMA_MAP_FLAG_WRITE,
                                          vaddr=addr, iova=iova, size=4096)
        u = uapi.vfio_iommu_type1_dma_unmap(
            argsz=ctypes.sizeof(uapi.vfio_iommu_type1_dma_unmap), iova=iova, size=4096)
        fd, rm, ru = s.container.fd, uapi.VFIO_IOMMU_MAP_DMA, uapi.VFIO_IOMMU_UNMAP_DMA

    def ref():
        for _ in range(N):
            fcntl.ioctl(fd, rm, m)
            fcntl.ioctl(fd, ru, u)
    return ref


def main() -> int:
    bdf = discovery.list_devices("1234:11e8")[0].bdf
    dev = PciDevice(bdf)
    was = dev.driver
    binding.move_to(dev, "vfio-pci")
    try:
        with vfioctl.open(bdf) as s:
            bar0 = s.region("bar0")
            fd, off = s.device.fd, bar0.info.offset
            assert bar0.read(0) == 0x010000ED

            def ours_pread():
                for _ in range(N):
                    bar0.read(0, 4)

            def ref_pread():
                for _ in range(N):
                    int.from_bytes(os.pread(fd, 4, off), "little")

            m = bar0.mmap()
            area, mm = m.areas[0]
            cell = ctypes.c_uint32.from_address(ctypes.addressof(ctypes.c_char.from_buffer(mm)))

            def ours_mmap():
                for _ in range(N):
                    m.read(0, 4)

            u32 = m.u32

            def ours_view():
                for _ in range(N):
                    u32[0]  # noqa: B018

            def ref_mmap():
                for _ in range(N):
                    cell.value  # noqa: B018

            import mmap as _mmap
            mem = _mmap.mmap(-1, 4096)

            def ours_map():
                for _ in range(N):
                    s.dma.map(mem, 1 << 30)
                    s.dma.unmap(1 << 30)

            if not AS_JSON:
                print(f"edu {bdf}, mode {s.iommu_mode}: {N} operations per round, {ROUNDS} "
                      "rounds (median)")
            compare("pread  Region.read(0, 4)", ours_pread, ref_pread)
            compare("mmap   MappedRegion.read(0, 4)", ours_mmap, ref_mmap)
            compare("mmap   regs.u32[0]", ours_view, ref_mmap)
            compare("DMA    map + unmap 4 KiB", ours_map, raw_map_unmap(s, mem))
            if AS_JSON:
                print(json.dumps({"device": bdf, "iommu_mode": s.iommu_mode, "n": N,
                                  "rounds": ROUNDS, "rows": ROWS}, indent=1))
    finally:
        binding.return_to(dev, was)
    return 0


if __name__ == "__main__":
    sys.exit(main())
