#!/usr/bin/env python3
"""Which part of ``dma.map`` costs time right after a large buffer was touched (bench.py's
large-map rows: vfioctl's map of a just-memset 256 MiB THP or hugetlb buffer against a bare
``fcntl.ioctl`` after the same memset).

Each round memsets the buffer before each variant, in a shuffled order, and times one map
(unmapped again untimed by a bare ioctl). The variants add dma.map's parts one by one in front
of or behind the same bare ioctl: the buffer export (``buffer_address``), the backend's struct
fill and seam (``_map_ioctl``), the whole of ``map`` without its ``Mapping`` record, the record
alone after the ioctl, and a few lines of unrelated Python (a 50-element list comprehension)
before the ioctl. Prints the median of each variant's per-round ratio to the bare ioctl.

Runs inside the test-bed VM (it binds ivshmem to vfio-pci and gives it back):
    scripts/vm-run --kernel 7 -- "$(python3 -c 'import sys;print(sys.executable)')" \\
        scripts/map_parts.py       # ROUNDS=31 by default; KIND=thp|2M|4k; BENCH_LARGE_MB
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import HUGEPAGES, IOVA, LARGE, ivshmem_on_vfio_pci, prebuilt  # noqa: E402

import vfioctl  # noqa: E402
from vfioctl.iova import Mapping, buffer_address  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "31"))
KIND = os.environ.get("KIND", "thp")


def variants(s, mem, addr: int, fd: int, rm: int, mp) -> dict:
    dma, length = s.dma, len(mem)

    def bare():
        fcntl.ioctl(fd, rm, mp)

    def python_then_bare():
        [i for i in range(50)]
        fcntl.ioctl(fd, rm, mp)

    def export_then_bare():
        _a, _n, keep = buffer_address(mem)
        fcntl.ioctl(fd, rm, mp)
        del keep

    def map_ioctl():
        dma._map_ioctl(addr, IOVA, length, True, True)

    def bare_then_record():
        fcntl.ioctl(fd, rm, mp)
        dma._maps[IOVA] = (Mapping(IOVA, length, True, True), None)

    def map_without_record():
        a, n, keep = buffer_address(mem)
        if (a | n) & 4095 or IOVA & 4095:
            raise ValueError("not page aligned")
        dma._map_ioctl(a, IOVA, n, True, True)
        dma._maps[IOVA] = ((IOVA, n), keep)

    def dma_map():
        dma.map(mem, IOVA)

    return {"bare fcntl.ioctl": bare, "50-item listcomp + bare": python_then_bare,
            "export + bare": export_then_bare, "_map_ioctl": map_ioctl,
            "bare + Mapping record": bare_then_record, "map without record": map_without_record,
            "dma.map": dma_map}


def main() -> None:
    with ivshmem_on_vfio_pci() as bdf:
        if KIND == "2M":
            HUGEPAGES.write_text(str(LARGE >> 21))
        with vfioctl.open(bdf) as s:
            buf = s.dma_alloc(LARGE, hugepages=None if KIND == "4k" else KIND)
            s.dma.unmap(buf.iova)
            addr = ctypes.addressof(ctypes.c_char.from_buffer(buf.mem))
            fd, rm, mp, ru, un = prebuilt(s, addr, LARGE)
            runs = variants(s, buf.mem, addr, fd, rm, mp)
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(ROUNDS):
                order = list(runs.items())
                random.shuffle(order)
                for name, fn in order:
                    ctypes.memset(addr, 0, LARGE)
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
                    s.dma._maps.clear()
                    fcntl.ioctl(fd, ru, un)
            print(f"{os.uname().release}, {s.iommu_mode}, {LARGE >> 20} MiB {KIND}, "
                  f"{ROUNDS} rounds: median of the per-round ratio to the bare ioctl")
            base = times["bare fcntl.ioctl"]
            for name, ts in times.items():
                ratio = statistics.median(t / b for t, b in zip(ts, base))
                print(f"  {name:26s} {statistics.median(ts) * 1e6:8.0f} us  {ratio:5.2f}x")
            s.dma.map(buf.mem, buf.iova)  # as dma_alloc left it, for dma_free at close
            s.dma_free(buf)

if __name__ == "__main__":
    main()
