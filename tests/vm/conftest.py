"""Fixtures for tests that run inside the test-bed VM, against the emulated devices.

Each device fixture puts its device on vfio-pci for the test and leaves it as it found it.

Kernel features: a test declares what it needs with ``@pytest.mark.requires("cdev", ...)``
(``"no-cdev"`` for a test about a kernel without it). The truth comes from what the booted
kernel shows at run time (vmhelpers.kernel_features: device nodes, /proc/devices, sysfs and
probing ioctls), never from its name. A test whose feature is missing is deselected, counted,
and reported on one line per kernel: ``deselected for missing kernel features: ...``; never
skipped. The features and counts are also written to $VFIOCTL_VM_WORKDIR/features.json for
scripts/vm-tests.

IOMMU modes: a test that takes the ``mode`` fixture runs once per mode of vfioctl.backend.MODES
(``group_mode``: once per mode of the group path; ``type1_mode``: once per mode of VFIO's own
type1 container);
the modes the booted kernel does not offer (vfioctl.backend.mode_support) are deselected and
counted the same way (``mode:NAME``).

Each test's start and outcome go to $VFIOCTL_VM_WORKDIR/progress.jsonl as they happen
(tests/vm/progress.py); ``--vm-done FILE`` leaves out the tests that finished in an earlier VM
of the run, which scripts/vm-tests boots again when the emulator failed it.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import hangwatch
import progress
from vmhelpers import (EDU, IGB, IVSHMEM, NVME, STATE, FEATURES, TYPE1_MODES, driver_of, find_all,
                       find_pci, kernel_features, offered_modes, sysfs_bind)

from vfioctl.backend import MODES

_report: dict = {}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires(*features): kernel features the test needs "
                   f"({', '.join(FEATURES)}; 'no-X' for a kernel without X)")


def _wanted(item) -> list[str]:
    return [f for m in item.iter_markers("requires") for f in m.args]


#: parameter name -> the modes it runs over
MODE_PARAMS = {"mode": MODES, "group_mode": tuple(m for m in MODES if m != "iommufd"),
               "type1_mode": TYPE1_MODES}


def pytest_generate_tests(metafunc):
    for name, modes in MODE_PARAMS.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, modes)


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--vm", default=False):
        return
    for f in {f for item in items for f in _wanted(item)}:
        if f.removeprefix("no-") not in FEATURES:
            raise pytest.UsageError(f"unknown kernel feature {f!r} in a requires() marker "
                                    f"(known: {', '.join(FEATURES)})")
    have = kernel_features()
    modes = offered_modes()
    keep, drop, why = [], [], Counter()
    for item in items:
        missing = [f for f in _wanted(item)
                   if (have[f[3:]] if f.startswith("no-") else not have[f])]
        params = getattr(getattr(item, "callspec", None), "params", {})
        missing += [f"mode:{params[p]}" for p in MODE_PARAMS
                    if p in params and params[p] not in modes]
        if missing:
            drop.append(item)
            why.update(missing)
        else:
            keep.append(item)
    _report.update(features=have, modes=modes, deselected=dict(why), deselected_total=len(drop))
    done_file = config.getoption("--vm-done")
    if done_file:
        # the emulator failed an earlier VM of this run: what finished there is not run again
        done = set(Path(done_file).read_text().splitlines())
        drop += [item for item in keep if item.nodeid in done]
        keep = [item for item in keep if item.nodeid not in done]
        _report["done_before"] = len(done)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    workdir = os.environ.get("VFIOCTL_VM_WORKDIR")
    if workdir:
        Path(workdir, "features.json").write_text(json.dumps(_report, indent=1))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Each VM test runs under the watchdog (tests/vm/hangwatch.py): a hang fails it with the
    kernel's and Python's stacks instead of eating the kernel's whole timeout."""
    if not item.config.getoption("--vm", default=False):
        yield
        return
    progress.started(item.nodeid)
    timer = hangwatch.arm(item.nodeid)
    try:
        yield
    finally:
        timer.cancel()
    progress.finished(item.nodeid, hangwatch.outcomes.get(item.nodeid, "skipped"))


def pytest_runtest_logreport(report):
    hangwatch.record(report)


def deselected_line(report: dict) -> str:
    why = report.get("deselected") or {}
    if not why:
        return "deselected for missing kernel features: none"
    parts = ", ".join(f"{f} ({n} test{'s' if n != 1 else ''})" for f, n in sorted(why.items()))
    return f"deselected for missing kernel features: {report['deselected_total']} tests: {parts}"


def pytest_report_header(config):
    if config.getoption("--vm", default=False):
        have = kernel_features()
        return ["kernel features: " + ", ".join(f"{k}={'yes' if v else 'no'}"
                                                for k, v in have.items()),
                "IOMMU modes offered: " + ", ".join(offered_modes())]


def pytest_terminal_summary(terminalreporter):
    if _report:
        terminalreporter.write_line(deselected_line(_report))
    if _report.get("done_before"):
        terminalreporter.write_line(f"not run again: {_report['done_before']} tests that "
                                    "finished in an earlier VM (the emulator failed it)")


def _on_vfio(ids: str):
    bdf = find_pci(ids)
    before = driver_of(bdf)
    sysfs_bind(bdf, "vfio-pci")
    yield bdf
    sysfs_bind(bdf, before)


@pytest.fixture
def edu():
    """edu's BDF, bound to vfio-pci for the test."""
    yield from _on_vfio(EDU)


@pytest.fixture
def igb():
    """The igb PF's BDF (no VFs), bound to vfio-pci for the test, back on igb after it."""
    yield from _on_vfio(IGB)


@pytest.fixture
def ivshmem():
    yield from _on_vfio(IVSHMEM)


@pytest.fixture
def scratch_ivshmem():
    """The ivshmem behind the second root port (anonymous memory, not the file the host checks
    after the run), on vfio-pci for the test."""
    bdf = [d for d in find_all(IVSHMEM) if not d.startswith("0000:00:")][0]
    sysfs_bind(bdf, "vfio-pci")
    yield bdf
    sysfs_bind(bdf, None)


@pytest.fixture
def nvme():
    """nvme's BDF, on its host driver; whatever the test did, it is left there and the state
    file is removed."""
    bdf = find_pci(NVME)
    assert driver_of(bdf) == "nvme"
    yield bdf
    if driver_of(bdf) != "nvme":
        sysfs_bind(bdf, "nvme")
    STATE.unlink(missing_ok=True)


@pytest.fixture
def workdir() -> Path:
    return Path(os.environ["VFIOCTL_VM_WORKDIR"])
