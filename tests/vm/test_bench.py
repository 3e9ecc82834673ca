"""The benchmark still runs (a smoke run with a tiny N in each mode; speed is never asserted)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vmhelpers import EDU, driver_of, find_pci

BENCH = Path(__file__).resolve().parents[2] / "scripts/bench.py"


def test_bench_smoke_run(mode):
    edu = find_pci(EDU)
    before = driver_of(edu)
    p = subprocess.run([sys.executable, str(BENCH), "--json"], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "BENCH_N": "5",
                                         "VFIOCTL_IOMMU_MODE": mode})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["iommu_mode"] == mode and out["n"] == 5
    assert [r["operation"].split()[0] for r in out["rows"]] == ["pread", "mmap", "mmap", "DMA"]
    assert all(r["ratio"] > 0 for r in out["rows"])
    assert driver_of(edu) == before
