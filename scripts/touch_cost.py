#!/usr/bin/env python3
"""How much longer a few lines of Python take right after the whole of a large buffer was
touched (the large-map rows of bench.py: the buffer is touched right before each map).

Times what ``dma.map`` runs around its ioctl (the buffer export, the checks, the Mapping record;
no ioctl, so no device is needed) right after a ``memset`` of the buffer, again right after
that, and after a ``memset`` of 1 MiB only. Runs on the host or in the bed's guest:
    python3 scripts/touch_cost.py            # MB=256 for another size
"""
from __future__ import annotations

import ctypes
import mmap
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vfioctl.iova import Mapping, buffer_address  # noqa: E402

SIZE = int(os.environ.get("MB", "128")) << 20


def main() -> None:
    buf = mmap.mmap(-1, SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.madvise(mmap.MADV_HUGEPAGE)
    addr, _, keep = buffer_address(buf)
    del keep

    def snippet():
        a, n, k = buffer_address(buf)
        if (a | n) & 4095:
            raise ValueError
        m = Mapping(1 << 30, n, True, True)
        {m.iova: (m, k)}.clear()

    first, again, small = [], [], []
    for i in range(15):
        ctypes.memset(addr, i, SIZE)
        t0 = time.perf_counter()
        snippet()
        t1 = time.perf_counter()
        snippet()
        t2 = time.perf_counter()
        first.append(t1 - t0)
        again.append(t2 - t1)
        ctypes.memset(addr, i, 1 << 20)
        t3 = time.perf_counter()
        snippet()
        small.append(time.perf_counter() - t3)

    def med(v):
        return statistics.median(v) * 1e6

    print(f"{os.uname().release}: right after touching {SIZE >> 20} MiB {med(first):.1f} us, "
          f"again right after that {med(again):.1f} us, after touching 1 MiB {med(small):.1f} us")


if __name__ == "__main__":
    main()
