"""The benchmark still runs (a smoke run with a tiny N in each mode, the C reference compiled
and run too; speed is never asserted)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vmhelpers import IVSHMEM, driver_of, find_pci

BENCH = Path(__file__).resolve().parents[2] / "scripts/bench.py"


def test_bench_smoke_run(mode):
    dev = find_pci(IVSHMEM)
    before = driver_of(dev)
    hugepages = Path("/proc/sys/vm/nr_hugepages").read_text()
    p = subprocess.run([sys.executable, str(BENCH), "--json"], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "BENCH_N": "100", "BENCH_ROUNDS": "1",
                                         "BENCH_LARGE_MB": "4", "VFIOCTL_IOMMU_MODE": mode})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["iommu_mode"] == mode and out["n"] == 100
    rows = out["rows"]
    refs = {r["reference"] for r in rows if "reference" in r}
    assert {"C pread", "C load", "C memcpy", "C ioctl", "C, same ioctls",
            "fcntl.ioctl, prebuilt structs", "a bare method (floor)", "two bare methods (floor)",
            "bare Python (floor)"} <= refs
    measured = [r for r in rows if "error" not in r]
    assert len(measured) == 32, [r["operation"] for r in rows]  # every row, hugetlb included
    assert {r["operation"] for r in measured} >= {"dma.map + dma.unmap 4 KiB",
                                                  "prepared map + unmap 4 KiB"}
    assert all(r["ratio"] > 0 and r["vfioctl_us"] > 0 for r in measured)
    assert driver_of(dev) == before
    assert Path("/proc/sys/vm/nr_hugepages").read_text() == hugepages
