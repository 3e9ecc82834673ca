"""Test selection: unit tests run anywhere; ``vm`` tests only inside the test-bed VM.

- ``--vm``: run the tests under tests/vm (marked ``vm``). Refused unless VFIOCTL_IN_VM=1, which
  only scripts/vm-run sets: these tests rebind PCI devices and must never touch a real host's.
  The run ends with the line ``vm: N passed, M failed`` (``, K skipped`` if any).
- ``--headers DIR``: run the ``headers`` tests against the UAPI headers exported by the kernel
  build (scripts/test.sh passes the cached build's).
- ``--after-vm DIR``: run tests/after_vm, the host-side checks of what a VM run left in DIR.
Without these options, those tests are deselected, never skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_addoption(parser):
    parser.addoption("--vm", action="store_true", help="run the VM tests (inside the VM only)")
    parser.addoption("--headers", metavar="DIR", help="exported UAPI headers of the test kernel")
    parser.addoption("--after-vm", metavar="DIR", help="a VM run's shared work directory")


def pytest_configure(config):
    if config.getoption("--vm") and os.environ.get("VFIOCTL_IN_VM") != "1":
        raise pytest.UsageError(
            "--vm runs tests that rebind PCI devices: only inside the test-bed VM "
            "(scripts/test.sh, or scripts/vm-run -- python -m pytest --vm ...)")


def pytest_collection_modifyitems(config, items):
    wanted = {
        "vm": bool(config.getoption("--vm")),
        "headers": bool(config.getoption("--headers")),
        "after_vm": bool(config.getoption("--after-vm")),
    }
    keep, drop = [], []
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(HERE.resolve())
        kind = {"vm": "vm", "after_vm": "after_vm"}.get(rel.parts[0])
        if kind == "vm":
            item.add_marker(pytest.mark.vm)
        if kind is None and item.get_closest_marker("headers"):
            kind = "headers"
        if wanted["vm"] or wanted["after_vm"]:
            # a VM (or after-VM) run runs its own tests only
            (keep if kind in ("vm", "after_vm") and wanted[kind] else drop).append(item)
        else:
            (keep if kind is None or wanted.get(kind) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def headers_dir(request) -> Path:
    d = Path(request.config.getoption("--headers"))
    assert (d / "include/linux/vfio.h").is_file(), f"no exported UAPI headers under {d}"
    return d


@pytest.fixture(scope="session")
def after_vm_dir(request) -> Path:
    return Path(request.config.getoption("--after-vm"))


# --- the closing line of a VM run ----------------------------------------------------------------
_counts = {"passed": 0, "failed": 0, "skipped": 0}


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed:
        _counts["passed"] += 1
    elif report.failed:
        _counts["failed"] += 1  # a failed setup/teardown (error) counts as a failure
    elif report.skipped:
        _counts["skipped"] += 1


def pytest_unconfigure(config):
    if config.getoption("--vm", default=False) and os.environ.get("VFIOCTL_IN_VM") == "1":
        line = f"vm: {_counts['passed']} passed, {_counts['failed']} failed"
        if _counts["skipped"]:
            line += f", {_counts['skipped']} skipped"
        print("\n" + line, flush=True)
