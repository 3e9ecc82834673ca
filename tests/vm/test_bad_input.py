"""Bad input, all of it, on every kernel: each of these is exit 2 with exactly one ``error:``
line and one ``hint:`` line, no traceback, and nothing changed (drivers, driver_override,
the state file)."""
from __future__ import annotations

from pathlib import Path

import pytest
from vmhelpers import ICH9_LPC, IGB, NVME, STATE, driver_of, find_pci, offered_modes, run_cli

from vfioctl.backend import MODES

UUID = "01234567-89ab-cdef-0123-456789abcdef"

# {EDU} is edu (on vfio-pci for the test), {NVME} nvme (on its driver), {IGB} the igb PF,
# {LPC} ICH9's LPC bridge, {MISSING} a mode this kernel does not offer, {DIR} a directory
BAD = [
    ("probe", "0000:00:1e.7"),
    ("probe", "zz:zz.z"),
    ("probe", "00:20.0"),
    ("probe", "vfio999"),
    ("probe", "/dev/vfio/devices/nope"),
    ("probe", "/tmp/x"),
    ("read", "{EDU}", "bar9x", "0"),
    ("read", "{EDU}", "0x100000000", "0"),
    ("read", "{EDU}", "bar1", "0"),
    ("read", "{EDU}", "bar0", "0x100000"),
    ("read", "{EDU}", "bar0", "2", "-w", "4"),
    ("read", "{EDU}", "bar0", "-4"),
    ("read", "{EDU}", "bar0", "zz"),
    ("read", "{EDU}", "bar0", "0", "-w", "3"),
    ("read", "{EDU}", "bar0", "0", "-n", "0"),
    ("read", "{EDU}", "config", "0", "--mmap"),
    ("read", "{EDU}", "bar0", "0", "--iommu-mode", "type3"),
    ("read", "{EDU}", "bar0", "0", "--iommu-mode", "{MISSING}"),
    ("read", "{EDU}", "bar0", "0", "--vf-token", "not-a-uuid"),
    ("read", "{EDU}", "bar0", "0", "--vf-token", UUID),
    ("read", "{NVME}", "bar0", "0"),
    ("read", "{EDU}", "bar0"),
    ("read", "{EDU}", "bar0", "0", "--bogus"),
    ("write", "{EDU}", "bar0", "4", "0x1ffff", "-w", "2"),
    ("write", "{EDU}", "bar0", "4", "zz"),
    ("write", "{EDU}", "bar0", "4", "-1"),
    ("write", "{EDU}", "bar0", "4"),
    ("dump", "{EDU}", "bar0", "0x100000", "16"),
    ("dump", "{EDU}", "bar0", "0", "zz"),
    ("info", "{EDU}", "--iommu-mode", "{MISSING}"),
    ("reset", "{EDU}"),
    ("reset", "{EDU}", "--hot"),
    ("run", "/nonexistent.py", "{EDU}"),
    ("run", "{DIR}", "{EDU}"),
    ("shell", "0000:00:1e.7"),
    ("bind", "0000:00:1e.7"),
    ("bind", "zz"),
    ("bind", "{LPC}"),
    ("unbind", "{EDU}", "--driver", "nosuchdriver"),
    ("unbind", "{EDU}"),
    ("list", "-d", "zzzz"),
    ("list", "-d", "8086"),
    ("sriov", "{NVME}"),
    ("sriov", "{IGB}", "--numvfs", "99"),
    ("sriov", "{IGB}", "--numvfs", "-1"),
    ("doctor", "0000:00:1e.7"),
    ("probe", "{EDU}", "--race", "--iommu-mode", "vfio_type1v2_iommu"),
    ("probe", "{EDU}", "--race", "--seconds", "0"),
    ("probe", "{EDU}", "--iommu-mode", "{MISSING}"),
    ("frobnicate",),
]


def snapshot(bdfs) -> tuple:
    def override(b):
        return Path(f"/sys/bus/pci/devices/{b}/driver_override").read_text()
    return (tuple((b, driver_of(b), override(b)) for b in bdfs),
            STATE.read_text() if STATE.exists() else None)


@pytest.mark.parametrize("args", BAD, ids=[" ".join(a) for a in BAD])
def test_bad_input_is_one_clear_error_and_changes_nothing(edu, args, tmp_path):
    names = {"EDU": edu, "NVME": find_pci(NVME), "IGB": find_pci(IGB),
             "LPC": find_pci(ICH9_LPC), "DIR": str(tmp_path),
             "MISSING": next(m for m in MODES if m not in offered_modes())}
    argv = [a.format(**names) for a in args]
    devices = [edu, names["NVME"], names["IGB"], names["LPC"]]
    before = snapshot(devices)
    rc, out, err = run_cli(*argv)
    assert rc == 2, (argv, rc, out, err)
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), \
        (argv, err)
    assert snapshot(devices) == before
    assert len(BAD) >= 40
