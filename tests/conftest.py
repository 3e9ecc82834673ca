"""Test selection: unit tests run anywhere; ``vm`` tests only inside the test-bed VM.

- ``--vm``: run the tests under tests/vm (marked ``vm``). Refused unless VFIOCTL_IN_VM=1, which
  only scripts/vm-run sets: these tests rebind PCI devices and must never touch a real host's.
  The run ends with the line ``vm: N passed, M failed`` (``, K skipped`` if any).
- ``--headers DIR``: run the ``headers`` tests against the UAPI headers exported by the kernel
  build (scripts/test.sh passes the cached build's).
- ``--vm-done FILE``: with ``--vm``, leave out the tests named in FILE, which finished in an
  earlier VM of the same run that the emulator failed (scripts/vm-tests, tests/vm/progress.py).
- ``--after-vm DIR``: run tests/after_vm, the host-side checks of what a VM run left in DIR.
  A check marked ``after_guest(NAME)`` runs only if the guest ran a test named NAME (any
  parametrisation) on that kernel, per DIR/junit-vm.xml and DIR/progress.jsonl; otherwise it is
  deselected and counted (a kernel that lacks what the guest test needs makes nothing to check).
Without these options, those tests are deselected, never skipped.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_addoption(parser):
    parser.addoption("--vm", action="store_true", help="run the VM tests (inside the VM only)")
    parser.addoption("--headers", metavar="DIR", help="exported UAPI headers of the test kernel")
    parser.addoption("--after-vm", metavar="DIR", help="a VM run's shared work directory")
    parser.addoption("--vm-done", metavar="FILE",
                     help="node ids (one a line) that finished in an earlier VM of this run: "
                          "not run again (scripts/vm-tests, after the emulator failed one)")


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
    guest_ran = _guest_tests_run(config.getoption("--after-vm"))
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(HERE.resolve())
        kind = {"vm": "vm", "after_vm": "after_vm"}.get(rel.parts[0])
        if kind == "vm":
            item.add_marker(pytest.mark.vm)
        if kind is None and item.get_closest_marker("headers"):
            kind = "headers"
        after = item.get_closest_marker("after_guest")
        if kind == "after_vm" and after is not None and after.args[0] not in guest_ran:
            drop.append(item)
            continue
        if wanted["vm"] or wanted["after_vm"]:
            # a VM (or after-VM) run runs its own tests only
            (keep if kind in ("vm", "after_vm") and wanted[kind] else drop).append(item)
        else:
            (keep if kind is None or wanted.get(kind) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _guest_tests_run(after_vm: str | None) -> set[str]:
    """Names (without parameters) of the guest tests that ran in the VM run at ``after_vm``."""
    if not after_vm:
        return set()
    import xml.etree.ElementTree as ET

    if str(HERE / "vm") not in sys.path:
        sys.path.insert(0, str(HERE / "vm"))
    from progress import NAME, read

    ran = set()
    junit = Path(after_vm) / "junit-vm.xml"
    if junit.is_file():
        ran = {case.get("name", "").split("[")[0]
               for case in ET.parse(junit).getroot().iter("testcase")
               if case.find("skipped") is None}
    # a run resumed after the emulator failed a VM: the earlier VMs' tests are in the progress log
    done, _ = read(Path(after_vm) / NAME)
    return ran | {nodeid.split("::")[-1].split("[")[0]
                  for nodeid, outcome in done.items() if outcome != "skipped"}


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
