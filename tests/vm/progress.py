"""The VM suite's progress, written as it happens, so a run whose VM the emulator fails goes on.

Inside the guest, each test's start and its final outcome are appended to
``$VFIOCTL_VM_WORKDIR/progress.jsonl`` (one JSON object a line, fsynced: the file is on the
host, shared over 9p, and must hold every line written before the emulator died). On the host,
``scripts/vm-tests`` reads it after the emulator failed the VM (vm-tests' emulator_fault, not a
guest failure): the tests that finished keep their outcomes, the one that was running is run
again, and the rest run in a fresh VM, which is told the finished ones with ``--vm-done FILE``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

NAME = "progress.jsonl"


def _append(entry: dict, workdir: str | Path | None = None) -> None:
    workdir = workdir or os.environ.get("VFIOCTL_VM_WORKDIR")
    if not workdir:
        return
    fd = os.open(Path(workdir, NAME), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def started(nodeid: str) -> None:
    _append({"start": nodeid})


def finished(nodeid: str, outcome: str) -> None:
    """``outcome``: passed, failed or skipped."""
    _append({"done": nodeid, "outcome": outcome})


def nudged(nodeid: str | None, cpu: int, late_s: float) -> None:
    """The guest's CPUs were nudged during ``nodeid`` (hangwatch.Heartbeats): ``cpu``'s
    heartbeat was ``late_s`` late."""
    _append({"nudged": nodeid, "cpu": cpu, "late_s": round(late_s)})


def host_nudged(workdir: Path, late_s: float, woke: bool) -> None:
    """On the host (scripts/vm-run): the guest's heartbeat file had stopped for ``late_s`` (a
    CPU's heartbeat, or every CPU's, had stopped: hangwatch.fresh), and an NMI from QEMU's
    monitor did (``woke``) or did not bring it back, during the test the log shows running."""
    _, running = read(workdir / NAME)
    _append({"nudged": running, "by": "host", "late_s": round(late_s), "woke": woke}, workdir)


def _entries(path: Path):
    if not path.is_file():
        return
    for line in path.read_text(errors="replace").splitlines():
        try:
            yield json.loads(line)
        except ValueError:
            continue  # a line cut short when the emulator died


def nudges(path: Path) -> list[dict]:
    """The nudges the progress log records, in order."""
    return [e for e in _entries(path) if "nudged" in e]


def read(path: Path) -> tuple[dict[str, str], str | None]:
    """The outcomes of the tests that finished (nodeid -> outcome; a test run again after an
    abort keeps its last one) and the test that had started last without finishing, if any."""
    outcomes: dict[str, str] = {}
    running = None
    for entry in _entries(path):
        if "start" in entry:
            running = entry["start"]
        elif "done" in entry:
            outcomes[entry["done"]] = entry["outcome"]
            if running == entry["done"]:
                running = None
    return outcomes, running


def counts(outcomes: dict[str, str]) -> dict[str, int]:
    return {k: sum(v == k for v in outcomes.values()) for k in ("passed", "failed", "skipped")}
