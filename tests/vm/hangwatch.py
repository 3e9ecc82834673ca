"""A hung VM test becomes a failure with the evidence, not a silent 25-minute timeout.

A test still running after ``LIMIT`` seconds (``VFIOCTL_TEST_HANG_S``, default 300: the slowest
test of the suite takes about a minute under TCG) is one the kernel or QEMU stopped: a task
blocked in the kernel (an unbind waiting for a device's users, a reset waiting for the device)
cannot be interrupted from Python. The watchdog thread then writes to ``$VFIOCTL_VM_WORKDIR``:

- ``hang.txt``: the test, every Python thread's stack, the kernel stack and wait channel of
  every thread of the test process and its children and of every task in D state, the kernel's
  own report of its blocked tasks (sysrq ``w``) and the end of the kernel log (our kernels have
  the hung-task detector at 60 s, so a task blocked that long has its stack there already);
- ``hang.json``: the test and the counts of the tests that finished before it;

and ends the guest with sysrq ``b`` (an immediate reset, which QEMU under virtme-ng's
``-no-reboot`` takes as an exit; a power-off would first shut every device down, which can wait
on the same device lock as the hung task). ``scripts/vm-tests`` reads both: the kernel's line
counts the hung test as failed and prints the report; its silence limit is built on ``LIMIT``.
"""
from __future__ import annotations

import ctypes
import faulthandler
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import progress

LIMIT = float(os.environ.get("VFIOCTL_TEST_HANG_S", "300"))
RB_AUTOBOOT = 0x01234567

#: nodeid -> "passed" / "failed", for the tests that finished
outcomes: dict[str, str] = {}


def record(report) -> None:
    """pytest_runtest_logreport: a test failed if any phase failed; passed if its call did."""
    if report.failed:
        outcomes[report.nodeid] = "failed"
    elif report.when == "call" and report.passed:
        outcomes.setdefault(report.nodeid, "passed")


def _family(pid: int) -> set[int]:
    """``pid`` and its descendants (through each thread's /proc children list)."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p in found:
            continue
        found.add(p)
        for t in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in t.joinpath("children").read_text().split()]
            except (OSError, ValueError):
                pass
    return found


def stuck_tasks() -> list[str]:
    """The kernel stacks of every thread of this process and its children, whatever their
    state (an unbind waiting for a device's users sleeps interruptibly on 6.12), and of every
    other task in D state (uninterruptible)."""
    ours = _family(os.getpid())
    out = []
    for task in sorted(Path("/proc").glob("[0-9]*/task/[0-9]*")):
        try:
            stat = task.joinpath("stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
            if state != "D" and int(task.parent.parent.name) not in ours:
                continue
            comm = stat[stat.index("(") + 1: stat.rindex(")")]
            try:  # only with CONFIG_KALLSYMS
                wchan = task.joinpath("wchan").read_text().strip()
            except OSError:
                wchan = "?"
            try:
                stack = task.joinpath("stack").read_text()
            except OSError as exc:
                stack = f"(no stack: {exc.strerror})\n"
            out.append(f"{task} {comm} state={state} wchan={wchan}\n{stack}")
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
    return out


def kernel_log() -> str:
    try:
        return subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"(dmesg failed: {exc})"


def _hung(nodeid: str, started: float) -> None:
    workdir = Path(os.environ.get("VFIOCTL_VM_WORKDIR", "/tmp"))
    try:
        Path("/proc/sysrq-trigger").write_text("w")  # the kernel's list of blocked tasks
    except OSError:
        pass
    time.sleep(1)
    with open(workdir / "hang.txt", "w") as f:
        f.write(f"{nodeid} still running after {time.monotonic() - started:.0f} s\n\n"
                "== Python threads of the test process\n")
        f.flush()
        faulthandler.dump_traceback(f, all_threads=True)
        f.write("\n== kernel stacks: the test process and its children, and any task in D "
                "state\n" + "\n".join(stuck_tasks()))
        f.write("\n== kernel log (the end)\n" + "\n".join(kernel_log().splitlines()[-250:])
                + "\n")
    done = progress.counts(outcomes)
    counts = {"passed": done["passed"], "failed": done["failed"] + 1}
    (workdir / "hang.json").write_text(json.dumps({"test": nodeid, "limit_s": LIMIT, **counts}))
    os.sync()
    # the test process cannot end while a task of it is blocked in the kernel: stop the guest
    try:
        Path("/proc/sysrq-trigger").write_text("b")
    except OSError:
        ctypes.CDLL(None, use_errno=True).reboot(RB_AUTOBOOT)
    os._exit(124)


def arm(nodeid: str) -> threading.Timer:
    """A timer that reports ``nodeid`` as hung unless cancelled within LIMIT seconds."""
    t = threading.Timer(LIMIT, _hung, args=(nodeid, time.monotonic()))
    t.daemon = True
    t.start()
    return t
