"""The golden layout file equals what a C program compiled against the test-bed kernel's
exported UAPI headers prints: sizeof, offsetof and size of every struct and field, and the value
of every constant and ioctl number (``--headers DIR``; scripts/test.sh passes it)."""
import shutil
import subprocess
from pathlib import Path

import pytest

from vfioctl.uapi import layout

GOLDEN = Path(__file__).parent / "golden" / "uapi-layout.txt"


@pytest.mark.headers
def test_c_headers_equal_golden(headers_dir, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler: scripts/install-deps.sh installs gcc"
    src = tmp_path / "layout.c"
    src.write_text(layout.c_program())
    exe = tmp_path / "layout"
    subprocess.run([cc, "-Wall", "-Werror", "-I", str(headers_dir / "include"), "-o", str(exe),
                    str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    assert out.splitlines() == GOLDEN.read_text().splitlines()
