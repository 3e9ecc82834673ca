"""scripts/bench_instr.py still counts: its harness reaches into the IOAS's map path and the
Region's read path, and fakes a session open's sysfs, nodes and requests (a rename there breaks
it), and the counts come out ordered as they must (the bare calls below bare methods making
them, below vfioctl's pure-Python paths; vfioctl's compiled paths below the bare methods).
Counts, not times: callgrind's are repeatable."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from vfioctl.speedups import compiled

SCRIPT = Path(__file__).resolve().parents[2] / "scripts/bench_instr.py"


def test_instruction_counts_of_a_4k_map_and_unmap_a_register_read_and_a_session_open():
    p = subprocess.run([sys.executable, str(SCRIPT), "floor", "vfioctl", "vfioctl_py", "prepared",
                        "prepared_py", "pread_floor", "region_read", "region_read_py",
                        "open_floor", "open"],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "BENCH_N": "300"})
    assert p.returncode == 0, p.stderr
    counts = dict((m[1], float(m[2])) for m in
                  re.finditer(r"^(\w+)\s+(\d+) instructions per iteration", p.stdout, re.M))
    assert set(counts) == {"reference", "floor", "vfioctl", "vfioctl_py", "prepared",
                           "prepared_py", "pread",
                           "pread_floor", "region_read", "region_read_py", "open_bare",
                           "open_floor", "open"}, p.stdout
    assert 0 < counts["reference"] < counts["floor"] < counts["vfioctl"], counts
    # a PreparedMapping's map + unmap in Python: above the bare methods, well below dma.map +
    # dma.unmap in Python; compiled (the host's install builds the extension): the prepared
    # ones below the bare methods, dma.map + dma.unmap below the prepared ones in Python
    assert counts["floor"] < counts["prepared_py"] < counts["vfioctl_py"] / 2, counts
    assert 0 < counts["pread"] < counts["pread_floor"] < counts["region_read_py"], counts
    assert compiled is not None, "vfioctl is installed without its extension (pip builds it)"
    assert counts["prepared"] < counts["floor"] and counts["region_read"] < counts["pread"], counts
    assert counts["vfioctl"] < counts["prepared_py"], counts
    assert 0 < counts["open_bare"] < counts["open_floor"] < counts["open"], counts
