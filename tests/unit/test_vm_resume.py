"""The bed goes on after QEMU itself aborts: vm-run tells the emulator's assertion from the guest's
own failures, the guest's progress log says what finished, and vm-tests boots a fresh VM for
the rest (the test that was running included) and counts both VMs' tests once each."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests/vm"))
import progress  # noqa: E402


def load(script: str):
    loader = importlib.machinery.SourceFileLoader(script.replace("-", "_"),
                                                  str(REPO / "scripts" / script))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


# the kernel log the guest's watchdog saved when an unbind of igbvf waited in rcu_barrier() on
# 6.12 (seventh stop; abridged): CPU 1 idle in HLT, its timer never woke it
STALL = """== kernel log (the end)
[  725.329191] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:
[  725.329322] rcu: 	1-...!: (0 ticks this GP) idle=6740/0/0x0 softirq=69538/69538 fqs=0
[  725.329687] NMI backtrace for cpu 1 skipped: idling at default_idle+0x13/0x15
[  725.329857] rcu: rcu_sched kthread timer wakeup didn't happen for 5251 jiffies! g140489 f0x0
[  725.329902] rcu: 	Possible timer handling issue on cpu=1 timer-softirq=24599
[  788.349817] rcu: rcu_sched kthread timer wakeup didn't happen for 15754 jiffies! g140489 f0x0
[  788.349874] rcu: 	Possible timer handling issue on cpu=1 timer-softirq=24599
"""


# what the bed printed when QEMU 10.0.2 aborted on 6.12 (the sixth stop's full run)
SEEN = (b"tests/vm/test_dma_irq_reset.py::test_hot_reset_behind_a_bridge[iommufd] PASSED\r\n"
        b"tests/vm/test_dma_irq_reset.py::test_hot_reset_is_seen_in_the_device[iommufd] "
        b"qemu-system-x86_64: system/physmem.c:2678: iotlb_to_section: Assertion "
        b"`section_index < d->map.sections_nb' failed.\r\n")


def test_vm_run_finds_qemus_assertion_and_nothing_else():
    vm_run = load("vm-run")
    assert vm_run.emulator_abort(SEEN) == (
        "qemu-system-x86_64: system/physmem.c:2678: iotlb_to_section: Assertion "
        "`section_index < d->map.sections_nb' failed")
    # QEMU's warnings about the guest's DMA faults, a guest's own assertion, a kernel panic
    for other in (b"qemu-system-x86_64: vtd_iommu_translate: detected translation failure "
                  b"(dev=00:0b:00, iova=0x200000)\n",
                  b"python3: foo.c:12: main: Assertion `x' failed.\n",
                  b"Kernel panic - not syncing: Fatal exception\n"):
        assert vm_run.emulator_abort(other) is None, other


def test_progress_keeps_the_last_outcome_and_the_test_left_running(tmp_path, monkeypatch):
    monkeypatch.setenv("VFIOCTL_VM_WORKDIR", str(tmp_path))
    progress.started("a")
    progress.finished("a", "passed")
    progress.started("b")
    progress.finished("b", "failed")
    progress.started("c")
    with open(tmp_path / progress.NAME, "a") as f:
        f.write('{"done": "c", "outc')  # cut short as the emulator died
    assert progress.read(tmp_path / progress.NAME) == ({"a": "passed", "b": "failed"}, "c")
    progress.started("c")  # the fresh VM runs it again
    progress.finished("c", "passed")
    progress.started("b")
    progress.finished("b", "passed")
    assert progress.read(tmp_path / progress.NAME) == (
        {"a": "passed", "b": "passed", "c": "passed"}, None)
    assert progress.counts({"a": "passed", "b": "failed", "c": "skipped", "d": "passed"}) == {
        "passed": 2, "failed": 1, "skipped": 1}


class FakeVMs:
    """vm-run as vm-tests sees it: each boot runs the tests not in --vm-done, in order; QEMU
    aborts while the test named in ``abort_in`` runs (once per entry)."""

    def __init__(self, workdir: Path, tests: list[str], abort_in: list[str],
                 fault: str = "abort"):
        self.workdir, self.tests, self.abort_in = workdir, tests, list(abort_in)
        self.fault = fault
        self.boots: list[list[str]] = []

    def fail(self) -> None:
        """What each kind of emulator failure leaves in the work directory."""
        if self.fault == "abort":  # vm-run found QEMU's assertion
            (self.workdir / "emulator-abort.txt").write_text(
                "qemu-system-x86_64: x.c:1: f: Assertion `0' failed\n")
        elif self.fault == "timer":  # the guest's watchdog, with the kernel's stall report
            (self.workdir / "hang.json").write_text('{"test": "t", "limit_s": 300}')
            (self.workdir / "hang.txt").write_text(STALL)
        elif self.fault == "silent":  # vm-run killed a silent guest, its CPUs all halted
            (self.workdir / "qemu-cpus.json").write_text(json.dumps(
                [{"cpu": 0, "rip": "f", "halted": True, "interrupts": True}]))

    def __call__(self, cmd, **kw):
        done = set()
        for arg in cmd:
            if arg.startswith("--vm-done="):
                done = set(Path(arg.split("=", 1)[1]).read_text().split())
        ran = []
        log = self.workdir / progress.NAME
        for t in self.tests:
            if t in done:
                continue
            ran.append(t)
            with open(log, "a") as f:
                f.write(json.dumps({"start": t}) + "\n")
                if self.abort_in and self.abort_in[0] == t:
                    self.abort_in.pop(0)
                    self.fail()
                    self.boots.append(ran)
                    return subprocess.CompletedProcess(cmd, 255)
                f.write(json.dumps({"done": t, "outcome": "passed"}) + "\n")
        (self.workdir / "junit-vm.xml").write_text(
            f'<testsuites><testsuite tests="{len(ran)}" failures="0" errors="0" '
            'skipped="0"/></testsuites>')
        self.boots.append(ran)
        return subprocess.CompletedProcess(cmd, 0)


@pytest.fixture
def vm_tests():
    return load("vm-tests")


def test_an_abort_reruns_the_test_it_hit_and_the_rest_once(tmp_path, vm_tests):
    vms = FakeVMs(tmp_path, ["t1", "t2", "t3", "t4"], abort_in=["t3"])
    rc, before, aborts = vm_tests.run_resuming(["vm-run"], tmp_path, "k", runner=vms)
    assert vms.boots == [["t1", "t2", "t3"], ["t3", "t4"]]
    assert rc == 0 and before == {"t1": "passed", "t2": "passed"}
    assert len(aborts) == 1 and "during t3, 2 tests in" in aborts[0]
    # the final count: the first VM's two and the second VM's junit (two), nothing twice
    counts = vm_tests.junit_counts(tmp_path / "junit-vm.xml")
    assert counts["passed"] + progress.counts(before)["passed"] == 4


def test_two_aborts_in_one_test_stop_the_resuming(tmp_path, vm_tests):
    vms = FakeVMs(tmp_path, ["t1", "t2", "t3"], abort_in=["t2", "t2"])
    rc, before, aborts = vm_tests.run_resuming(["vm-run"], tmp_path, "k", runner=vms)
    assert vms.boots == [["t1", "t2"], ["t2"]]
    assert rc == 255 and len(aborts) == 2 and not (tmp_path / "junit-vm.xml").exists()


def test_a_guest_failure_is_never_resumed(tmp_path, vm_tests):
    calls = []

    def guest_fails(cmd, **kw):  # the guest's own failure: no junit, no emulator line
        calls.append(cmd)
        (tmp_path / progress.NAME).write_text('{"start": "t1"}\n')
        return subprocess.CompletedProcess(cmd, 255)

    rc, before, aborts = vm_tests.run_resuming(["vm-run"], tmp_path, "k", runner=guest_fails)
    assert len(calls) == 1 and rc == 255 and before == {} and aborts == []


def junit(path: Path, tests: int, failures: int = 0) -> None:
    path.write_text(f'<testsuites><testsuite tests="{tests}" failures="{failures}" errors="0" '
                    'skipped="0"/></testsuites>')


def log(workdir: Path, *entries: dict) -> None:
    with open(workdir / progress.NAME, "a") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)


def test_the_verdict_counts_each_vms_tests_once(tmp_path, vm_tests):
    # resumed: four tests finished in the first VM (one failed), the fresh VM's junit has three
    before = {"a": "passed", "b": "failed", "c": "passed", "d": "passed"}
    junit(tmp_path / "junit-vm.xml", 3)
    counts, problems = vm_tests.guest_counts(tmp_path, "k", 0, before, ["QEMU aborted ..."])
    assert counts == {"passed": 6, "failed": 1, "skipped": 0} and problems == []


def test_a_vm_that_ended_without_results_keeps_what_finished_and_names_the_test(tmp_path,
                                                                                 vm_tests):
    log(tmp_path, {"start": "a"}, {"done": "a", "outcome": "passed"},
        {"start": "b"}, {"done": "b", "outcome": "failed"}, {"start": "c"})
    (tmp_path / "output-tail.txt").write_text("c PASSED\n\nKernel panic - not syncing: x\n")
    counts, problems = vm_tests.guest_counts(tmp_path, "k", 255, {}, [])
    assert counts == {"passed": 1, "failed": 2, "skipped": 0}
    assert problems == ["the guest wrote no results (vm-run exited 255) during c, 2 tests in; "
                        "its last lines: c PASSED | Kernel panic - not syncing: x"]


def test_aborts_that_stopped_the_resuming_count_the_log_once(tmp_path, vm_tests):
    # three VMs: a passed in the first, b passed in the second, QEMU died in c in the last two
    log(tmp_path, {"start": "a"}, {"done": "a", "outcome": "passed"}, {"start": "c"},
        {"start": "b"}, {"done": "b", "outcome": "passed"}, {"start": "c"})
    counts, problems = vm_tests.guest_counts(tmp_path, "k", 255, {"a": "passed"},
                                             ["one", "two", "QEMU aborted during c"])
    assert counts == {"passed": 2, "failed": 1, "skipped": 0}
    assert problems == ["the VM failed QEMU aborted during c; not booted again "
                        "after 3 such failures"]


# QEMU 10.0.2's monitor about a 7.3 guest sleeping in `sleep 1000` (abridged)
MONITOR = """== info status
VM status: running
== info registers -a

CPU#0
RAX=0000000000000000 RBX=ffffffff81808f80 RCX=0000000000000046 RDX=0000000000000000
RIP=ffffffff814761cf RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
ES =0000 0000000000000000 00000000 00000000

CPU#1
RAX=0000000000000000 RBX=ffffffff81808f80 RCX=0000000000000046 RDX=0000000000000000
RIP=ffffffff81000123 RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
"""


def test_vm_run_sums_up_a_silent_guests_cpus():
    assert load("vm-run").cpu_summary(MONITOR) == [
        "VM status: running", "CPU0 RIP=ffffffff814761cf HLT=1 IF=1",
        "CPU1 RIP=ffffffff81000123 HLT=0 IF=0"]


@pytest.mark.parametrize("fault", ["abort", "timer", "silent"])
def test_each_kind_of_emulator_failure_is_resumed_and_its_reports_kept(tmp_path, vm_tests,
                                                                       fault):
    vms = FakeVMs(tmp_path, ["t1", "t2", "t3"], abort_in=["t2"], fault=fault)
    rc, before, aborts = vm_tests.run_resuming(["vm-run"], tmp_path, "k", runner=vms)
    assert vms.boots == [["t1", "t2"], ["t2", "t3"]] and before == {"t1": "passed"}
    assert rc == 0 and len(aborts) == 1 and aborts[0].startswith("during t2, 1 tests in, ")
    # the first VM's reports set aside, none left where the last VM's would be read
    left = {p.name for p in tmp_path.iterdir()}
    assert not left & {"emulator-abort.txt", "hang.json", "hang.txt", "qemu-cpus.json"}
    assert any(n.startswith("vm1-") for n in left)


def test_what_the_emulator_is_blamed_for(tmp_path, vm_tests):
    assert vm_tests.emulator_fault(tmp_path) is None
    (tmp_path / "hang.json").write_text("{}")
    (tmp_path / "hang.txt").write_text("[<0>] rcu_barrier+0x1d2/0x249\n")  # a plain hang
    assert vm_tests.emulator_fault(tmp_path) is None
    (tmp_path / "hang.txt").write_text(STALL)
    assert vm_tests.emulator_fault(tmp_path) == (
        "a CPU's timer interrupts stopped (the guest kernel: rcu_sched kthread timer wakeup "
        "didn't happen for 5251 jiffies! g140489 f0x0; Possible timer handling issue on cpu=1)")
    for f in ("hang.json", "hang.txt"):
        (tmp_path / f).unlink()
    cpus = tmp_path / "qemu-cpus.json"
    for states, blamed in (([(True, True), (True, True)], True),
                           ([(True, True), (False, True)], False),  # a CPU still running
                           ([(True, False), (True, True)], False)):  # one stopped itself
        cpus.write_text(json.dumps([{"cpu": i, "rip": "f", "halted": h, "interrupts": on}
                                    for i, (h, on) in enumerate(states)]))
        assert (vm_tests.emulator_fault(tmp_path) is not None) is blamed, states



# QEMU's monitor on a 6.12 guest killed for its silence (2026-12-01, abridged): CPU0 halted with
# its timer's vector requested above its priority, CPU1 spinning in the kernel
MONITOR_PENDING = """== info registers -a

CPU#0
RIP=ffffffff8140d1fc RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1

CPU#1
RIP=ffffffff813fd3ab RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
== info irq
IRQ statistics for isa-i8259:
 0: 124
== info lapic 0
dumping local APIC state for CPU 0 \n
LVTT\t 0x000000ec active-hi edge                 one-shot     Fixed  (vec 236)
Timer\t DCR=0x3 (divide by 16) initial_count = 230957 current_count = 0
ICR\t 0x000000fb physical edge de-assert no-shorthand
ISR\t (none)
IRR\t 236 \n
APR 0x00 TPR 0x10 DFR 0x0f LDR 0x00 PPR 0x10
== info lapic 1
dumping local APIC state for CPU 1 \n
ISR\t (none)
IRR\t 236 \n
APR 0x00 TPR 0x00 DFR 0x0f LDR 0x00 PPR 0xe0
"""


def test_a_silent_guest_with_a_halted_cpu_and_an_interrupt_pending_is_the_emulators(tmp_path,
                                                                                     vm_tests):
    vm_run = load("vm-run")
    states = vm_run.cpu_states(MONITOR_PENDING)
    assert states == [
        {"cpu": 0, "rip": "ffffffff8140d1fc", "halted": True, "interrupts": True, "pending": [236],
         "in_service": [], "timer": 0},
        # 236's class (14) is not above PPR 0xe0's: not deliverable
        {"cpu": 1, "rip": "ffffffff813fd3ab", "halted": False, "interrupts": True,
         "pending": [], "in_service": [], "timer": None}]
    assert vm_run.cpu_summary(MONITOR_PENDING) == [
        "CPU0 RIP=ffffffff8140d1fc HLT=1 IF=1 pending=236 timer=0 (ran out)",
        "CPU1 RIP=ffffffff813fd3ab HLT=0 IF=1"]
    cpus = tmp_path / "qemu-cpus.json"
    cpus.write_text(json.dumps(states))
    assert vm_tests.emulator_fault(tmp_path) == (
        "the guest went silent with CPU0 halted, interrupts enabled and vector 236 pending above "
        "its priority: the emulator did not wake it")
    states[0]["pending"] = []  # nothing pending: a CPU that waits, and one that runs
    cpus.write_text(json.dumps(states))
    assert vm_tests.emulator_fault(tmp_path) is None
    states[0]["pending"], states[0]["interrupts"] = [236], False  # it stopped taking them itself
    cpus.write_text(json.dumps(states))
    assert vm_tests.emulator_fault(tmp_path) is None

def test_a_hang_with_a_cpu_whose_heartbeat_stopped_is_the_emulators(tmp_path, vm_tests):
    (tmp_path / "hang.txt").write_text("[<0>] rcu_barrier+0x1d8/0x24f\n")
    (tmp_path / "hang.json").write_text(json.dumps({"test": "t", "late_cpus": {}}))
    assert vm_tests.emulator_fault(tmp_path) is None  # every CPU beat: not the emulator's
    (tmp_path / "hang.json").write_text(json.dumps({"test": "t", "late_cpus": {"1": 251}}))
    assert vm_tests.emulator_fault(tmp_path) == (
        "a CPU's timers stopped (a thread pinned to it that sleeps 1 s had not run for 251 s "
        "on CPU1, a nudge did not wake it)")


# the watchdog's report of 2026-12-01 on 7.3 (abridged): the igb fixture's unbind waited in
# rcu_barrier() and the main thread's join(90) was still waiting at 300 s
REPORT = f"""tests/vm/test_selftest.py::test_igb_recovers_when_a_copy_never_completes[iommufd] still running after 301 s
CPU heartbeats: CPU0 1 s ago, CPU1 250 s ago

== Python threads of the test process
Thread 0x00007f75859a86c0 (most recent call first):
  File "/usr/lib/python3.11/pathlib.py", line 1078 in write_text
  File "{REPO}/tests/vm/vmhelpers.py", line 75 in write
  File "/usr/lib/python3.11/threading.py", line 982 in run

Current thread 0x00007f75881d96c0 (most recent call first):
  File "{REPO}/tests/vm/hangwatch.py", line 108 in _hung

Thread 0x00007f7589773b80 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 1123 in join
  File "{REPO}/tests/vm/vmhelpers.py", line 81 in bounded_write
  File "{REPO}/tests/vm/vmhelpers.py", line 105 in sysfs_bind

== Python threads of the child 1700
Current thread 0x00007f7589773b80 (most recent call first):
  File "{REPO}/vfioctl/selftest.py", line 95 in fault
  File "{REPO}/vfioctl/selftest.py", line 190 in after_fault

== kernel stacks: the test process and its children, and any task in D state
/proc/72/task/1645 python3.11 state=R wchan=0
[<0>] proc_pid_stack+0x75/0xc2

/proc/72/task/1646 python3.11 state=D wchan=rcu_barrier
[<0>] rcu_barrier+0x1d8/0x24f
[<0>] netdev_run_todo+0x5c/0x3f9
"""


def test_a_hangs_verdict_line_says_where_it_hung(vm_tests):
    assert vm_tests.hang_gist(REPORT) == (
        "CPU heartbeats: CPU0 1 s ago, CPU1 250 s ago; python3.11 blocked in rcu_barrier; "
        "the test process at tests/vm/vmhelpers.py:81 bounded_write; "
        "the child 1700 at vfioctl/selftest.py:95 fault")
    assert vm_tests.hang_gist("nothing we know\n") == ""


def test_nudges_are_listed_with_their_tests_outcome(tmp_path, vm_tests, monkeypatch):
    monkeypatch.setenv("VFIOCTL_VM_WORKDIR", str(tmp_path))
    progress.started("t1")
    progress.nudged("t1", 1, 16.4)
    progress.finished("t1", "passed")
    progress.started("t2")
    progress.nudged("t2", 0, 15.6)
    assert vm_tests.nudge_lines(tmp_path) == [
        "during t1, CPU1's heartbeat 16 s late: the test then passed",
        "during t2, CPU0's heartbeat 16 s late: the test then did not finish"]


def test_a_guest_whose_heartbeat_stops_is_nudged_from_the_monitor_then_ended(tmp_path, vm_tests,
                                                                           monkeypatch):
    """vm-run's Heartbeat on a clock of its own: nothing before the first pulse; the console's
    output counts as life; an NMI after ``stall`` s of neither, a kill ``stall / 2`` after an NMI
    that brought no pulse back; each nudge in the progress log, where vm-tests reports it."""
    vm_run = load("vm-run")
    sent = []
    monkeypatch.setattr(vm_run, "_monitor", lambda path, cmds, wait=5.0: sent.append(cmds) or "")
    monkeypatch.setenv("VFIOCTL_VM_WORKDIR", str(tmp_path))
    progress.started("t1")
    pulse = tmp_path / "heartbeat"
    beat = vm_run.Heartbeat(pulse, 60, tmp_path)
    assert beat.check(500, 0) is None and sent == []  # booting: no pulse yet, nothing awaited
    pulse.write_text("1 2.0\n")
    assert beat.check(600, 0) is None
    assert beat.check(659, 0) is None and sent == []
    assert beat.check(700, 650) is None and sent == []  # the console spoke at 650
    assert beat.check(711, 650) is None and sent == [["nmi"]]
    pulse.write_text("2 2.0\n")
    assert beat.check(713, 712) is None  # it came back
    assert beat.check(774, 713) is None and sent == [["nmi"]] * 2
    assert beat.check(804, 790) is None  # the NMI's own console line is no pulse
    assert beat.check(805, 790) == "stopped (no heartbeat for 92 s, and none since an NMI 31 s ago)"
    assert vm_tests.nudge_lines(tmp_path) == [
        "during t1, the guest's heartbeat 61 s late, an NMI from the host woke the guest: the "
        "test then did not finish",
        "during t1, the guest's heartbeat 61 s late, an NMI from the host did not wake the "
        "guest: the test then did not finish"]
    # the test process's last pulse: nothing is awaited after it
    pulse.write_text("end 3 2.4\n")
    beat = vm_run.Heartbeat(pulse, 60, tmp_path)
    assert beat.check(900, 0) is None and beat.check(2000, 0) is None and sent == [["nmi"]] * 2


def test_time_by_file_sums_each_files_tests_slowest_first(tmp_path):
    vm_tests = load("vm-tests")
    path = tmp_path / "junit-vm.xml"
    path.write_text(
        '<testsuites><testsuite tests="4">'
        '<testcase classname="test_dma" name="a" time="1.5"/>'
        '<testcase classname="tests.vm.test_plugin" name="b" time="40.25"/>'
        '<testcase classname="test_dma.TestMaps" name="c" time="2.5"/>'
        '<testcase classname="test_dma" name="d"/>'
        '</testsuite></testsuites>')
    assert vm_tests.seconds_by_file(path) == [("test_plugin", 40.25), ("test_dma", 4.0)]
    assert vm_tests.seconds_by_file(tmp_path / "none.xml") == []


def test_the_guest_pulses_only_while_every_cpus_heartbeat_is_fresh(tmp_path, monkeypatch):
    """A CPU whose heartbeat is FRESH_S late stops the pulses though the other CPU's thread
    runs on: the host's watch then sees the stop (it watched in vain for 480 s before)."""
    import hangwatch

    assert hangwatch.fresh({0: 100.0, 1: 100.0 - hangwatch.FRESH_S}, 100.0)
    assert not hangwatch.fresh({0: 100.0, 1: 99.0 - hangwatch.FRESH_S}, 100.0)
    beats = hangwatch.Heartbeats.__new__(hangwatch.Heartbeats)  # no threads: the rule alone
    beats.beat = {0: 0.0, 1: 0.0}
    beats._pulse_lock = hangwatch.threading.Lock()
    beats._pulsed, beats._pulses, beats._max_gap = 0.0, 0, 0.0
    pulse = tmp_path / hangwatch.PULSE
    beats._pulse_fd = hangwatch.os.open(pulse, hangwatch.os.O_RDWR | hangwatch.os.O_CREAT)
    for now in range(2, 61, 2):  # CPU0's thread beats on; CPU1's stopped at 0
        beats.beat[0] = float(now)
        beats._pulse(float(now))
    assert pulse.read_text().split() == [str(int(hangwatch.FRESH_S / 2)), "2.0"]
    beats.beat[1] = 61.0  # it came back: the pulses go on, with the gap they had
    beats._pulse(61.0)
    assert pulse.read_text().split() == [str(int(hangwatch.FRESH_S / 2) + 1), "31.0"]
    beats.beat[1] = 0.0
    beats._pulse(200.0, last=True)  # the last pulse is written whatever the CPUs do
    assert pulse.read_text().split()[0] == "end"


def test_the_heartbeats_run_alone_beside_the_demo_and_end_with_a_last_pulse(tmp_path):
    """``python3 tests/vm/hangwatch.py`` (scripts/demo-guest.sh runs it): it pulses, and on
    SIGTERM (a second one while it ends, too) exits 0 with the last pulse, ``end``."""
    import signal
    import time

    import hangwatch

    env = {"PATH": "/usr/bin:/bin", "VFIOCTL_VM_WORKDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, str(REPO / "tests/vm/hangwatch.py")], env=env)
    pulse = tmp_path / hangwatch.PULSE
    try:
        deadline = time.monotonic() + 30
        while not pulse.is_file() or not pulse.read_text().strip():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        assert int(pulse.read_text().split()[0]) >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0
    assert pulse.read_text().split()[0] == "end"


def test_vm_run_removes_the_workdir_it_made_after_a_clean_run_only(tmp_path, monkeypatch,
                                                                   capsys):
    """Without --workdir, vm-run's temporary one goes after the guest exited 0; a failed run
    keeps it (its evidence) and says where; a --workdir of the caller's is never removed."""
    vm_run = load("vm-run")
    made = []
    monkeypatch.setattr(vm_run.shutil, "which", lambda tool, **kw: "/usr/bin/" + tool)
    monkeypatch.setattr(vm_run, "qemu_version", lambda: (10, 0))
    monkeypatch.setattr(vm_run, "kernel_dir", lambda arg: tmp_path)

    def mkdtemp(prefix: str) -> str:
        made.append(tmp_path / f"{prefix}{len(made)}")
        made[-1].mkdir()
        return str(made[-1])

    monkeypatch.setattr(vm_run.tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(sys, "argv", ["vm-run", "--", "true"])
    for rc in (0, 3):
        def boot(args, cmd, kernel, workdir: Path, rc: int = rc) -> int:
            (workdir / "output-tail.txt").write_text("the guest's last words")
            return rc

        monkeypatch.setattr(vm_run, "boot", boot)
        assert vm_run.main() == rc
    assert not made[0].exists()
    assert (made[1] / "output-tail.txt").is_file()
    assert f"the run's files are kept in {made[1]}" in capsys.readouterr().err
    own = tmp_path / "own"
    monkeypatch.setattr(sys, "argv", ["vm-run", "--workdir", str(own), "--", "true"])
    monkeypatch.setattr(vm_run, "boot", lambda args, cmd, kernel, workdir: 0)
    assert vm_run.main() == 0 and own.is_dir()


def test_vm_run_names_each_cpus_function_and_whether_it_moved(tmp_path, monkeypatch):
    vm_run = load("vm-run")
    (tmp_path / "kallsyms.txt").write_text(
        "ffffffffb528e8a0 T native_apic_mem_eoi\n"
        "ffffffffb528e8c0 t physflat_get_apic_id\n"
        "ffffffffb5f0fa30 T pv_native_safe_halt\n"
        "ffffffffc0a01000 t vfio_pci_core_read\t[vfio_pci_core]\n")
    name = vm_run.symbolizer(tmp_path / "kallsyms.txt")
    assert name(0xffffffffb528e8a6) == "native_apic_mem_eoi+0x6"
    assert name(0xffffffffc0a01010) == "vfio_pci_core_read+0x10 [vfio_pci_core]"
    assert name(0xffffffffb5000000) is None and name(0xffffffffc0c01010) is None
    assert vm_run.symbolizer(tmp_path / "none.txt")(0xffffffffb528e8a6) is None

    first = ("CPU#0\nRIP=ffffffffb5f0fa3f RFL=00000202 [-------] CPL=0 HLT=1\n"
             "CPU#1\nRIP=ffffffffb528e8a6 RFL=00000086 [--S--P-] CPL=0 HLT=0\n")
    later = [first, first.replace("HLT=1", "HLT=0").replace("b5f0fa3f", "b5f0fa40")]
    monkeypatch.setattr(vm_run.time, "sleep", lambda s: None)
    monkeypatch.setattr(vm_run, "_monitor", lambda path, cmds, wait=5.0: later.pop(0))
    states, text = vm_run.sample_cpus(first, tmp_path)
    assert [(c["symbol"], c["moved"]) for c in states] == [
        ("pv_native_safe_halt+0xf", True), ("native_apic_mem_eoi+0x6", False)]
    assert vm_run.cpu_summary("VM status: running\n", states) == [
        "VM status: running", "CPU0 RIP=ffffffffb5f0fa3f (pv_native_safe_halt+0xf) HLT=1 IF=1",
        "CPU1 RIP=ffffffffb528e8a6 (native_apic_mem_eoi+0x6) HLT=0 IF=0, the same RIP 2 s later"]
    assert text.count("CPU#1") == 2


def test_a_silent_guest_whose_cpus_made_no_progress_is_resumed_and_says_so(tmp_path, vm_tests):
    """CI's Debian run of 2026-12-02: CPU1 held at the end-of-interrupt write with interrupts
    disabled, CPU0 halted; not known whose fault, so it is resumed, and said so."""
    cpus = tmp_path / "qemu-cpus.json"

    def states(*cpus_):
        cpus.write_text(json.dumps([
            {"cpu": i, "rip": "ffffffff85a8e8a6", "halted": h, "interrupts": on, "pending": [],
             "moved": moved, "symbol": "native_apic_mem_eoi+0x6"}
            for i, (h, on, moved) in enumerate(cpus_)]))
        return vm_tests.emulator_fault(tmp_path)

    assert states((True, True, False), (False, False, False)) == (
        "no CPU of the guest made progress: CPU1 held at native_apic_mem_eoi+0x6 with "
        "interrupts disabled (the same RIP over 2 s), the others halted waiting for an "
        "interrupt, an NMI from the host changing nothing (the emulator stuck or the guest "
        "kernel locked up: not known which; a test it happens in twice fails)")
    assert states((False, False, False), (False, False, False)).startswith(
        "no CPU of the guest made progress: CPU0 held at native_apic_mem_eoi+0x6 with "
        "interrupts disabled (the same RIP over 2 s), CPU1 held at")
    assert states((True, True, False), (False, False, True)) is None  # CPU1 ran on
    assert states((True, True, False), (False, True, False)) is None  # it takes interrupts
    assert states((True, False, False), (False, False, False)) is None  # CPU0 stopped itself


def test_a_silent_guest_with_the_cpu_it_nudged_still_halted_is_the_emulators(tmp_path, vm_tests,
                                                                              monkeypatch):
    """The host's watch fires for one CPU now: the guest nudged CPU1 in the running test, and
    QEMU shows it halted, taking interrupts, while CPU0 runs."""
    monkeypatch.setenv("VFIOCTL_VM_WORKDIR", str(tmp_path))
    progress.started("t1")
    progress.nudged("t1", 0, 15.2)  # an earlier nudge, of a CPU that runs now
    progress.finished("t1", "passed")
    progress.started("t2")
    cpus = tmp_path / "qemu-cpus.json"
    cpus.write_text(json.dumps([
        {"cpu": 0, "rip": "a", "halted": False, "interrupts": True, "pending": [], "moved": True},
        {"cpu": 1, "rip": "b", "halted": True, "interrupts": True, "pending": []}]))
    assert vm_tests.emulator_fault(tmp_path) is None  # no nudge of CPU1 in t2
    progress.nudged("t2", 1, 15.6)
    assert vm_tests.emulator_fault(tmp_path) == (
        "the guest's heartbeat stopped with CPU1 halted, interrupts enabled, its heartbeat "
        "thread (a 1 s sleep) not run since the guest nudged it: the emulator did not wake it")
    progress.nudged("t2", 0, 15.6)  # a nudge of a CPU that runs blames nothing
    assert "CPU0" not in vm_tests.emulator_fault(tmp_path)


# QEMU's monitor on a 7.3 guest killed for its silence during the e1000e MSI-X test (2026-12-03,
# abridged): both CPUs idle, CPU0's timer vector still in service, its later interrupts held
MONITOR_IN_SERVICE = """== info registers -a
CPU#0
RIP=ffffffff814761cf RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
CPU#1
RIP=ffffffff814761cf RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
== info lapic 0
dumping local APIC state for CPU 0 \n
LVTT\t 0x000000ec active-hi edge                 one-shot     Fixed  (vec 236)
Timer\t DCR=0x3 (divide by 16) initial_count = 208582 current_count = 0
ISR\t 236 \n
IRR\t 43 44 236 \n
APR 0x00 TPR 0x10 DFR 0x0f LDR 0x00 PPR 0xe0
== info lapic 1
dumping local APIC state for CPU 1 \n
Timer\t DCR=0x3 (divide by 16) initial_count = 172370 current_count = 38419
ISR\t (none)
IRR\t (none)
APR 0x01 TPR 0x10 DFR 0x0f LDR 0x00 PPR 0x10
"""


def test_a_halted_cpu_with_an_interrupt_still_in_service_lost_its_end(tmp_path, vm_tests):
    vm_run = load("vm-run")
    states = vm_run.cpu_states(MONITOR_IN_SERVICE)
    assert [(c["pending"], c["in_service"]) for c in states] == [([], [236]), ([], [])]
    assert vm_run.cpu_summary(MONITOR_IN_SERVICE)[0] == (
        "CPU0 RIP=ffffffff814761cf HLT=1 IF=1 in-service=236 timer=0 (ran out)")
    states[1].update(halted=False, interrupts=True, moved=True)  # even with CPU1 running on
    (tmp_path / "qemu-cpus.json").write_text(json.dumps(states))
    assert vm_tests.emulator_fault(tmp_path) == (
        "the guest went silent with CPU0 halted, interrupts enabled and vector 236 still in "
        "service: its end-of-interrupt was lost (Linux writes it before it idles), and with it "
        "every interrupt of a lower class, its timer's included")
    states[0]["interrupts"] = False  # halted with interrupts off: stopped itself, not this
    (tmp_path / "qemu-cpus.json").write_text(json.dumps(states))
    assert vm_tests.emulator_fault(tmp_path) is None


def lapic_dump(timers: tuple[tuple[int, int], tuple[int, int]], irr1: str = "(none)",
               rip: str = "ffffffff814761cf") -> str:
    """A monitor dump of two CPUs halted at ``rip`` (the idle loop) and their local APICs: each
    one-shot timer's (initial, current) count, CPU1's IRR."""
    text = "== info registers -a\n" + "".join(
        f"CPU#{c}\nRIP={rip} RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\n"
        for c in (0, 1))
    for c, (initial, current) in enumerate(timers):
        text += (f"== info lapic {c}\ndumping local APIC state for CPU {c} \n\n"
                 "LVTT\t 0x000000ec active-hi edge                 one-shot     Fixed  (vec 236)\n"
                 f"Timer\t DCR=0x3 (divide by 16) initial_count = {initial} "
                 f"current_count = {current}\n"
                 f"ISR\t (none)\nIRR\t {irr1 if c else '(none)'}\n"
                 f"APR 0x0{c} TPR 0x10 DFR 0x0f LDR 0x00 PPR 0x10\n")
    return text


# the local APICs when Debian's guest went silent with both CPUs halted (this machine,
# 2026-12-03, in test_lifetimes; an NMI from the host woke CPU0 and nothing came of it)
DEBIAN_TIMERS = ((56137057, 27545118), (29740385, 1343883))
MONITOR_TIMERS = lapic_dump(DEBIAN_TIMERS, rip="ffffffff87f0fa3f")


@pytest.mark.parametrize("counting", [False, True])
def test_vm_run_samples_each_cpus_timer_and_the_verdict_says_whether_it_counted(
        tmp_path, monkeypatch, vm_tests, counting):
    """A local APIC timer counts on QEMU's virtual clock: the same count 2 s later is a clock
    that stood still; a count that moved is a clock that runs, and then every CPU halted is a
    guest waiting for an event, not for its timer."""
    vm_run = load("vm-run")
    later = (lapic_dump(((56137057, 27000000), DEBIAN_TIMERS[1]), rip="ffffffff87f0fa3f")
             if counting else MONITOR_TIMERS)
    asked = []

    def monitor(path, cmds, wait=5.0):
        asked.append(cmds)
        return later

    monkeypatch.setattr(vm_run.time, "sleep", lambda s: None)
    monkeypatch.setattr(vm_run, "_monitor", monitor)
    states, _ = vm_run.sample_cpus(MONITOR_TIMERS, tmp_path)
    assert asked == [["info registers -a", "info lapic 0", "info lapic 1"]] * 2
    assert [c["timer"] for c in states] == [27545118, 1343883]
    words = "(counting)" if counting else "(the same 2 s later)"
    assert vm_run.cpu_summary("", states) == [
        f"CPU0 RIP=ffffffff87f0fa3f HLT=1 IF=1 timer=27545118 {words}",
        "CPU1 RIP=ffffffff87f0fa3f HLT=1 IF=1 timer=1343883 (the same 2 s later)"]
    (tmp_path / "qemu-cpus.json").write_text(json.dumps(states))
    verdict = vm_tests.emulator_fault(tmp_path)
    assert verdict.startswith("the guest went silent with every CPU halted")
    assert ("their local APIC timers counting (QEMU's clock runs)" in verdict) == counting
    assert ("no timer waking it" in verdict) != counting


@pytest.mark.parametrize("timeout", [None, 1.25])
def test_vm_run_reads_the_timeout_qemus_main_loop_waits_with(timeout):
    """main_loop_wait() on a real process in ppoll: with no timeout, and with one."""
    import time

    call = ("ppoll(None, 0, None, None)" if timeout is None else
            "ppoll(None, 0, ctypes.byref((ctypes.c_long * 2)(1, 250000000)), None)")
    proc = subprocess.Popen([sys.executable, "-c", "import ctypes; "
                             "ppoll = ctypes.CDLL(None, use_errno=True).ppoll; "
                             f"[{call} for _ in range(1000)]"])
    vm_run = load("vm-run")
    try:
        deadline = time.monotonic() + 30
        while (wait := vm_run.main_loop_wait(proc.pid)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert wait == ("ppoll with no timeout" if timeout is None else
                    f"ppoll with a timeout of {timeout:.3f} s")
    assert vm_run.main_loop_wait(proc.pid) is None  # gone


def test_a_halted_cpu_whose_timer_ran_out_with_nothing_pending_lost_its_interrupt(
        tmp_path, monkeypatch, vm_tests):
    """7.3, this machine, 2026-12-03, during test_selftest_passes_on_igb: vm-run's three dumps.
    CPU0 halted with its timer run out and nothing pending in all three; CPU1 re-armed its
    timer (its 4 ms tick) between them, 236 pending in two: CPU1 ran, CPU0's interrupt was
    lost (the single-dump rule had blamed CPU1's pending 236)."""
    vm_run = load("vm-run")
    dumps = [lapic_dump(((246238, 0), (239799, 0)), "236 "),
             lapic_dump(((246238, 0), (241375, 0)), "236 "),
             lapic_dump(((246238, 0), (243944, 6497)), "(none)")]
    monkeypatch.setattr(vm_run.time, "sleep", lambda s: None)
    later = iter(dumps[1:])
    monkeypatch.setattr(vm_run, "_monitor", lambda path, cmds, wait=5.0: next(later))
    states, _ = vm_run.sample_cpus(dumps[0], tmp_path)
    assert vm_run.cpu_summary("", states) == [
        "CPU0 RIP=ffffffff814761cf HLT=1 IF=1 timer=0 (ran out)",
        "CPU1 RIP=ffffffff814761cf HLT=1 IF=1 timer=0 (counting)"]
    (tmp_path / "qemu-cpus.json").write_text(json.dumps(states))
    assert vm_tests.emulator_fault(tmp_path) == (
        "the guest went silent with CPU0 halted, interrupts enabled, and its local APIC timer "
        "run out over vm-run's samples with nothing pending or in service: the emulator lost "
        "the timer's interrupt (Linux re-arms or stops the timer in that interrupt)")
    masked = dumps[0].replace("one-shot     Fixed", "masked one-shot     Fixed")
    assert [c["timer"] for c in vm_run.cpu_states(masked)] == [None, None]  # it raises nothing
    states[0]["timer_moved"] = True  # CPU0 re-armed too: both ran their ticks
    (tmp_path / "qemu-cpus.json").write_text(json.dumps(states))
    assert "their local APIC timers counting" in vm_tests.emulator_fault(tmp_path)
