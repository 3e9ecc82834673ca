"""Binding under faults, on every kernel: killed with SIGKILL after each step of a bind or an
unbind, then `vfioctl restore`; a step that fails; two binds at once; a bind of several devices
that fails part-way. The faults are injected from the harness: the forked CLI child wraps its
own sysfs writes and state saves (vmhelpers.run_cli(inject=...)); vfioctl has no test hooks."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from vmhelpers import EDU, driver_of, find_pci, nvme_node, run_cli, state, wait_for



def at_step(k: int, action):
    """An inject function: after the k-th step (a sysfs write or a state save) of the child,
    call ``action(what, value)``."""
    def inject():
        from vfioctl import binding
        real_write, real_save = binding._write, binding.State.save
        n = [0]

        def step(what, value):
            n[0] += 1
            if n[0] == k:
                action(what, value)

        def write(path, value, what):
            real_write(path, value, what)
            step(what, value)

        def save(self, data):
            real_save(self, data)
            step("save the state file", "")

        binding._write = write
        binding.State.save = save
    return inject


def die(what, value):
    os.kill(os.getpid(), signal.SIGKILL)


def assert_home(nvme: str) -> None:
    """nvme on its driver, no override left, a state file that loads and no longer lists it."""
    assert driver_of(nvme) == "nvme"
    assert open(f"/sys/bus/pci/devices/{nvme}/driver_override").read().strip() == "(null)"
    from vfioctl.binding import State
    assert nvme not in State().load()
    nvme_node(nvme)


@pytest.mark.parametrize("command", ["bind", "unbind"])
def test_sigkill_after_every_step_then_restore(nvme, command):
    """Killed after step k, for every k until the command completes: `vfioctl restore` puts the
    device back on its original driver every time."""
    kills = 0
    for k in range(1, 16):
        if command == "unbind":
            rc, out, err = run_cli("bind", nvme)
            assert rc == 0 and driver_of(nvme) == "vfio-pci", err
        rc, out, err = run_cli(command, nvme, inject=at_step(k, die))
        if rc == 0:  # k is past the last step: the command completed
            break
        assert rc == -signal.SIGKILL, (k, rc, err)
        kills += 1
        rc, out, err = run_cli("restore")
        assert rc == 0 and "Traceback" not in err, (k, err)
        assert_home(nvme)
    else:
        pytest.fail(f"{command} did not complete within 15 steps")
    assert kills >= 3, f"{command} has only {kills} steps?"  # save, override, unbind, probe
    if command == "bind":
        rc, out, err = run_cli("unbind", nvme)
        assert rc == 0, err
    assert_home(nvme)


def test_a_failed_step_returns_the_device_before_exit(nvme):
    def fail(what, value):
        from vfioctl.errors import BindingError
        raise BindingError(f"injected failure after '{what}'")

    rc, out, err = run_cli("bind", nvme, inject=at_step(3, fail))  # after the unbind
    assert rc == 2 and "Traceback" not in err, err
    assert err.startswith("error: injected failure after 'unbind from nvme'"), err
    assert_home(nvme)
    assert state() == {}


def test_two_binds_at_once(nvme):
    """The second waits for the first (the lock) and finds the device bound."""
    def pause(what, value):
        time.sleep(1.5)

    results = {}

    def first():
        results["first"] = run_cli("bind", nvme, inject=at_step(3, pause))

    t = threading.Thread(target=first)
    t.start()
    wait_for(lambda: nvme in state(), timeout=60, what="the first bind's record")
    second = run_cli("bind", nvme)
    t.join(timeout=60)
    (rc1, out1, err1), (rc2, out2, err2) = results["first"], second
    assert rc1 == 0 and rc2 == 0, (err1, err2)
    assert "bound to vfio-pci (was nvme)" in out1
    assert "already bound to vfio-pci (was nvme)" in out2
    assert driver_of(nvme) == "vfio-pci"
    assert run_cli("unbind", nvme)[0] == 0
    assert_home(nvme)


def test_a_bind_of_several_devices_is_all_or_nothing(nvme):
    """edu binds, then nvme's probe step fails: edu is returned before the command exits, and
    the error says so."""
    edu = find_pci(EDU)
    assert driver_of(edu) is None

    def inject():
        from vfioctl import binding
        from vfioctl.errors import BindingError
        real_write = binding._write

        def write(path, value, what):
            if value == nvme and what == "probe vfio-pci":  # not the return to nvme
                raise BindingError(f"injected failure of '{what}' for {nvme}")
            real_write(path, value, what)
        binding._write = write

    rc, out, err = run_cli("bind", edu, nvme, inject=inject)
    assert rc == 2 and "Traceback" not in err, err
    assert f"injected failure of 'probe vfio-pci' for {nvme}" in err, err
    assert f"returned {edu} to their drivers" in err, err
    assert driver_of(edu) is None and driver_of(nvme) == "nvme"
    assert state() == {}
    assert_home(nvme)


# --- a device some program has open; Ctrl-C at the waits ------------------------------------------
def holder_of(bdf: str):
    """A child process that has ``bdf`` open through vfioctl (the cdev with iommufd, or a
    device fd from its group on a kernel without cdevs), until it is killed."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "import sys, time, vfioctl\n"
                          f"s = vfioctl.open({bdf!r})\n"
                          "print('open', s.iommu_mode, flush=True)\ntime.sleep(600)\n"],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith("open "), "the holder could not open the device"
    return p


def cli_process(*args):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "vfioctl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def holds_lock(pid: int) -> bool:
    """Whether process ``pid`` has vfioctl's lock file open (it is inside state.locked())."""
    from vfioctl.binding import State

    lock = str(State().root / "lock")
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == lock:
                return True
        except OSError:
            pass
    return False


def test_unbind_of_a_device_a_program_has_open_waits_then_names_it(nvme):
    """The kernel's unbind would block until the program closes the device: vfioctl waits
    (--timeout), then refuses naming the program; the device stays on vfio-pci with its record;
    once the program is gone the unbind goes through."""
    assert run_cli("bind", nvme)[0] == 0
    holder = holder_of(nvme)
    try:
        t = time.monotonic()
        rc, out, err = run_cli("unbind", nvme, "--timeout", "2")
        assert rc == 2 and "Traceback" not in err, (rc, out, err)
        assert "is still open by python" in err and f"(pid {holder.pid}) after 2 s" in err, err
        assert time.monotonic() - t >= 2
        assert driver_of(nvme) == "vfio-pci" and nvme in state()
    finally:
        holder.kill()
        holder.wait()
    rc, out, err = run_cli("unbind", nvme)
    assert rc == 0, err
    assert_home(nvme)


def test_unbind_and_restore_of_a_device_this_process_has_open_refuse_at_once(nvme):
    """The holder is the caller itself (a bring-up script that unbinds with its session still
    open): waiting could never end, so the library refuses at once, naming this process, and
    the device stays on vfio-pci with its record; after the session closes both go through."""
    import vfioctl
    from vfioctl.binding import restore, unbind
    from vfioctl.errors import BindingError
    from vfioctl.pci import PciDevice

    assert run_cli("bind", nvme)[0] == 0
    session = vfioctl.open(nvme)
    try:
        for call in (lambda: unbind([PciDevice(nvme)], timeout=600),
                     lambda: restore(timeout=600)):
            with pytest.raises(BindingError) as exc:
                call()
            assert f"{nvme} is open in this process" in str(exc.value), exc.value
            assert "close the session" in exc.value.hint
            assert driver_of(nvme) == "vfio-pci" and nvme in state()
    finally:
        session.close()
    assert [r.bdf for r in unbind([PciDevice(nvme)])] == [nvme]
    assert_home(nvme)
    assert restore() == []


def test_ctrl_c_while_unbind_waits_for_a_holder_leaves_the_device_bound_and_recorded(nvme):
    assert run_cli("bind", nvme)[0] == 0
    holder = holder_of(nvme)
    try:
        cli = cli_process("unbind", nvme, "--timeout", "300")
        wait_for(lambda: holds_lock(cli.pid), timeout=120, what="unbind inside the lock")
        time.sleep(1)  # inside the holder wait
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 130, (out, err)
        # one error and one hint (after the newline click ends the ^C line with)
        assert err.strip().splitlines() == [
            "error: interrupted", "hint: nothing was left half-done; run the command again"], err
        assert driver_of(nvme) == "vfio-pci" and nvme in state()
    finally:
        holder.kill()
        holder.wait()
    assert run_cli("unbind", nvme)[0] == 0
    assert_home(nvme)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_ctrl_c_while_bind_waits_for_the_lock_changes_nothing(nvme, as_json):
    import fcntl

    from vfioctl.binding import State

    st = State()
    st.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(st.root / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another vfioctl, busy
    try:
        cli = cli_process(*(["--json"] if as_json else []), "bind", nvme)
        wait_for(lambda: holds_lock(cli.pid), timeout=120, what="bind at the lock")
        time.sleep(1)
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 130, (out, err)
        if as_json:  # the error is JSON on stdout, as every --json error
            e = json.loads(out)
            assert (e["error"], e["message"]) == ("Interrupted", "interrupted"), out
            assert e["hint"] == "nothing was left half-done; run the command again", out
            assert err.strip() == "", err
        else:
            assert err.strip().splitlines() == [
                "error: interrupted",
                "hint: nothing was left half-done; run the command again"], err
    finally:
        os.close(fd)
    assert_home(nvme)
