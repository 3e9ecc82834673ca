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

Each CPU has a heartbeat (``Heartbeats``): a thread pinned to it that wakes every second. The
emulator has lost a halted CPU's wake-up under TCG (the README's test-bed section): its timers
stop, and whatever waits on them waits for ever (an unbind in ``rcu_barrier()``, a thread's
``join(90)`` still waiting at 300 s). When one CPU's heartbeat is ``NUDGE_S`` late, another's
thread nudges the guest's CPUs (sysrq ``l``: an NMI to each, which wakes a halted CPU; the
interrupt that waited for it then runs) and appends the event to the progress log; a hang
report names the CPUs whose heartbeat is late (``hang.json``'s ``late_cpus``), the evidence
scripts/vm-tests needs to blame the emulator. The children ``run_cli`` forks register for
their Python stacks (``dump_stack_on_signal``), which a hang report then includes.

The heartbeats also pulse ``$VFIOCTL_VM_WORKDIR/heartbeat`` (``PULSE``) every ``PULSE_S``
seconds, on the host's disk: when every CPU stops (the emulator's lost wake-ups on all of them at
once), no thread in the guest can report it, and scripts/vm-run, watching the file's changes,
nudges the guest from QEMU's monitor and, failing that, ends the VM within a minute or two
rather than after the console's long silence limit. The file holds the pulse count and the
longest gap between two pulses so far (s); its last pulse, when the test process ends, begins
with ``end``. The pulses stop while any CPU's heartbeat is ``FRESH_S`` late (``fresh``), not only
when every CPU stops: a thread on a CPU that runs would otherwise pulse on for one that stopped.
For the host's account of a stopped CPU, the kernel's text symbols at this boot's addresses are
saved to ``$VFIOCTL_VM_WORKDIR/kallsyms.txt`` (``save_symbols``), which scripts/vm-run uses to
name the function each CPU is in. Run as a script (``main``), this module runs the heartbeats
alone, beside a guest command that is not the suite (the demo).
"""
from __future__ import annotations

import atexit
import ctypes
import faulthandler
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import progress

LIMIT = float(os.environ.get("VFIOCTL_TEST_HANG_S", "300"))
RB_AUTOBOOT = 0x01234567
#: a CPU's heartbeat this late (s) gets the CPUs nudged; this late at a hang, the CPU is named
NUDGE_S = 15.0
LATE_S = 60.0
#: the file the heartbeats pulse for the host (scripts/vm-run --heartbeat), and how often (s)
PULSE = "heartbeat"
PULSE_S = 2.0
#: the pulses stop while a CPU's heartbeat is later than this (s): the guest's own nudge has had
#: its chance, and the host's watch takes over, though the other CPU runs on
FRESH_S = 2 * NUDGE_S
#: the kernel's text symbols at this boot's addresses, for the host (scripts/vm-run names
#: stopped CPUs' RIPs with them)
SYMBOLS = "kallsyms.txt"

#: nodeid -> "passed" / "failed", for the tests that finished
outcomes: dict[str, str] = {}


def record(report) -> None:
    """pytest_runtest_logreport: a test failed if any phase failed; passed if its call did."""
    if report.failed:
        outcomes[report.nodeid] = "failed"
    elif report.when == "call" and report.passed:
        outcomes.setdefault(report.nodeid, "passed")


def _family(pid: int) -> set[int]:
    """``pid`` and its descendants, from each process's parent in /proc/PID/stat (the
    /proc/PID/task/TID/children lists need CONFIG_PROC_CHILDREN, which our kernels lack)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
    found, grew = {pid}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in found} - found
        found |= new
        grew = bool(new)
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


def _workdir() -> Path:
    return Path(os.environ.get("VFIOCTL_VM_WORKDIR", "/tmp"))


def _sysrq(key: str) -> None:
    try:
        Path("/proc/sysrq-trigger").write_text(key)
    except OSError:
        pass


def stack_file(pid: int) -> Path:
    return _workdir() / f"pystack-{pid}.txt"


_stack_out = None


def dump_stack_on_signal() -> None:
    """In a forked child: dump this process's Python stacks to ``stack_file`` on SIGUSR1 (the
    hang report asks each child that registered)."""
    global _stack_out
    _stack_out = open(stack_file(os.getpid()), "w")
    faulthandler.register(signal.SIGUSR1, file=_stack_out, all_threads=True)


def child_stacks() -> str:
    """The Python stacks of the test process's children that registered for them."""
    pids = sorted(p for p in _family(os.getpid()) - {os.getpid()} if stack_file(p).is_file())
    for pid in pids:
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError:
            pass
    time.sleep(1)
    return "".join(f"\n== Python threads of the child {pid}\n"
                   + stack_file(pid).read_text(errors="replace") for pid in pids)


class Heartbeats:
    """One thread per CPU, pinned to it, noting the time each second; each also watches the
    others' (see the module's docstring). ``late()``: the ``ages()`` of the CPUs at least
    ``LATE_S`` late."""

    def __init__(self):
        self.beat = {cpu: time.monotonic() for cpu in sorted(os.sched_getaffinity(0))}
        self.nudged_at: dict[int, float] = {}
        self.test: str | None = None
        self._pulse_lock = threading.Lock()
        self._pulsed, self._pulses, self._max_gap = time.monotonic(), 0, 0.0
        self._pulse_fd = None
        if os.environ.get("VFIOCTL_VM_WORKDIR"):
            path = _workdir() / PULSE
            self._pulse_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            atexit.register(self._last_pulse, os.getpid())
        for cpu in self.beat:
            threading.Thread(target=self._run, args=(cpu,), daemon=True,
                             name=f"heartbeat-cpu{cpu}").start()

    def _run(self, cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})  # 0: this thread
        while True:
            prev, now = self.beat[cpu], time.monotonic()
            self.beat[cpu] = now
            if now - prev < 5:  # else this thread was late too (the GIL held, the guest busy)
                self._watch(now)
            self._pulse(now)
            time.sleep(1)

    def _pulse(self, now: float, last: bool = False) -> None:
        """Every PULSE_S, from whichever CPU's thread runs first, while every CPU's heartbeat
        is fresh(): the count and the longest gap so far into the heartbeat file (fsynced: the
        host watches it change); the last pulse says ``end``."""
        if self._pulse_fd is None or not last and (now - self._pulsed < PULSE_S
                                                   or not fresh(self.beat, now)):
            return
        if not self._pulse_lock.acquire(blocking=last):
            return
        try:
            self._max_gap = max(self._max_gap, now - self._pulsed)
            self._pulsed, self._pulses = now, self._pulses + 1
            line = f"{'end ' if last else ''}{self._pulses} {self._max_gap:.1f}\n"
            os.pwrite(self._pulse_fd, line.encode().ljust(32), 0)
            os.fsync(self._pulse_fd)
        except OSError:
            pass  # the host's file is its business; the heartbeats go on
        finally:
            if last:
                self._pulse_fd = None
            self._pulse_lock.release()

    def _last_pulse(self, pid: int) -> None:
        """At the test process's end (not a forked child's): no more pulses, none awaited."""
        if os.getpid() == pid:
            self._pulse(time.monotonic(), last=True)

    def _watch(self, now: float) -> None:
        for other, last in self.beat.items():
            if now - last > NUDGE_S and self.nudged_at.get(other, 0) < last:
                self.nudged_at[other] = now  # once per stall
                _sysrq("l")  # an NMI to every other CPU: wakes one halted for good
                progress.nudged(self.test, other, now - last)

    def ages(self) -> dict[int, int]:
        """CPU -> seconds since its last beat."""
        now = time.monotonic()
        return {cpu: round(now - last) for cpu, last in self.beat.items()}

    def late(self) -> dict[int, int]:
        return {cpu: age for cpu, age in self.ages().items() if age >= LATE_S}


def fresh(beats: dict[int, float], now: float) -> bool:
    """Whether no CPU's last beat (``beats``: CPU -> time) is more than FRESH_S old: else that
    CPU has stopped (a nudge did not wake it), and the guest's pulses stop, so that the host
    sees it even while the other CPU's thread runs on (a CPU whose thread runs cannot pulse for
    one that stopped: the host watched in vain for 480 s, twice on 2026-12-02)."""
    return all(now - beat <= FRESH_S for beat in beats.values())


heartbeats: Heartbeats | None = None
_modules: frozenset[str] | None = None  # the modules loaded when the symbols were last saved
_saver: subprocess.Popen | None = None


def save_symbols() -> None:
    """At a test's start, the first time and whenever a module was loaded or removed since: the
    kernel's text symbols (/proc/kallsyms, this boot's addresses) into the work directory's
    SYMBOLS, for scripts/vm-run to name the function a stopped CPU is in. A niced grep in the
    background: off this process's GIL and behind the tests' own work (about 3 s of a CPU
    under TCG for Debian's kernel, with its modules)."""
    global _modules, _saver
    if not os.environ.get("VFIOCTL_VM_WORKDIR") or _saver and _saver.poll() is None:
        return  # (still saving: the next test's start looks again)
    try:
        modules = frozenset(line.split(" ", 1)[0]
                            for line in Path("/proc/modules").read_text().splitlines())
    except OSError:
        modules = frozenset()
    if modules == _modules:
        return
    _modules = modules
    _saver = subprocess.Popen(["nice", "-n", "19", "sh", "-c",
                               'grep -E "^[0-9a-f]+ [tTwW] " /proc/kallsyms > "$1.new" '
                               '&& mv "$1.new" "$1"', "sh", str(_workdir() / SYMBOLS)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)


def _hung(nodeid: str, started: float) -> None:
    workdir = _workdir()
    _sysrq("w")  # the kernel's list of blocked tasks
    children = child_stacks()  # (waits a second: the kernel's list is written meanwhile)
    late = heartbeats.late() if heartbeats else {}
    with open(workdir / "hang.txt", "w") as f:
        f.write(f"{nodeid} still running after {time.monotonic() - started:.0f} s\n")
        if heartbeats:
            f.write("CPU heartbeats: " + ", ".join(
                f"CPU{c} {age} s ago" for c, age in heartbeats.ages().items()) + "\n")
        f.write("\n== Python threads of the test process\n")
        f.flush()
        faulthandler.dump_traceback(f, all_threads=True)
        f.write(children)
        f.write("\n== kernel stacks: the test process and its children, and any task in D "
                "state\n" + "\n".join(stuck_tasks()))
        f.write("\n== kernel log (the end)\n" + "\n".join(kernel_log().splitlines()[-250:])
                + "\n")
    done = progress.counts(outcomes)
    counts = {"passed": done["passed"], "failed": done["failed"] + 1}
    (workdir / "hang.json").write_text(json.dumps({"test": nodeid, "limit_s": LIMIT, **counts,
                                                   "late_cpus": late}))
    os.sync()
    # the test process cannot end while a task of it is blocked in the kernel: stop the guest
    _sysrq("b")
    ctypes.CDLL(None, use_errno=True).reboot(RB_AUTOBOOT)  # if sysrq did not
    os._exit(124)


def arm(nodeid: str) -> threading.Timer:
    """A timer that reports ``nodeid`` as hung unless cancelled within LIMIT seconds; the
    CPUs' heartbeats start with the first test."""
    global heartbeats
    if heartbeats is None:
        heartbeats = Heartbeats()
    heartbeats.test = nodeid
    save_symbols()
    t = threading.Timer(LIMIT, _hung, args=(nodeid, time.monotonic()))
    t.daemon = True
    t.start()
    return t


def main() -> None:
    """``python3 tests/vm/hangwatch.py``: the heartbeats alone, beside a guest command that is
    not the suite (scripts/demo-guest.sh), until SIGTERM. They nudge a CPU whose wake-up the
    emulator lost and pulse the file that ``scripts/vm-run --heartbeat`` watches (the last
    pulse says ``end``); the kernel's symbols are saved as at each test's start."""
    global heartbeats

    def stop(*_) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the last pulse is being written
        sys.exit(0)  # (through atexit: the last pulse)

    signal.signal(signal.SIGTERM, stop)
    heartbeats = Heartbeats()
    while True:
        save_symbols()  # (again only after a module was loaded or removed)
        time.sleep(5)


if __name__ == "__main__":
    main()
