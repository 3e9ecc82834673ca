#!/usr/bin/env python3
"""Benchmark vfioctl's register access against a bare reference, side by side, as ratios.

Runs inside the test-bed VM (it binds edu to vfio-pci):
    scripts/vm-run -- "$(python3 -c 'import sys;print(sys.executable)')" scripts/bench.py

For each access path it times N reads of edu's ID register (bar0+0) through vfioctl and through
the bare minimum doing the same syscall/load (os.pread + int.from_bytes; a ctypes uint32 at the
mmap's address), interleaved, 7 rounds, and reports the median ratio vfioctl / reference.
Absolute times under TCG mean little; ratios from the same run do.
"""
from __future__ import annotations

import ctypes
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


def compare(name: str, ours, ref) -> float:
    ratios, o_times, r_times = [], [], []
    for _ in range(ROUNDS):
        o, r = timed(ours), timed(ref)
        o_times.append(o)
        r_times.append(r)
        ratios.append(o / r)
    ratio = statistics.median(ratios)
    print(f"{name:32s} vfioctl {statistics.median(o_times) * 1e6:8.2f} us  reference "
          f"{statistics.median(r_times) * 1e6:8.2f} us  ratio {ratio:5.2f}x")
    return ratio


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

            def ref_mmap():
                for _ in range(N):
                    cell.value  # noqa: B018

            print(f"edu {bdf}, {N} reads of bar0+0 per round, {ROUNDS} rounds (median)")
            compare("pread  Region.read(0, 4)", ours_pread, ref_pread)
            compare("mmap   MappedRegion.read(0, 4)", ours_mmap, ref_mmap)
    finally:
        binding.return_to(dev, was)
    return 0


if __name__ == "__main__":
    sys.exit(main())
