"""Helpers for the tests that run inside the test-bed VM. Devices are found by vendor:device,
never by address."""
from __future__ import annotations

import errno
import fcntl
import functools
import os
import re
import subprocess
import sys
import time
from pathlib import Path

SYS_PCI = Path("/sys/bus/pci")

#: the IOMMU modes whose DMA space is VFIO's own type1 container
TYPE1_MODES = ("vfio_type1_iommu", "vfio_type1v2_iommu")
EDU = "1234:11e8"
IVSHMEM = "1af4:1110"
NVME = "1b36:0010"
E1000E = "8086:10d3"
IGB = "8086:10c9"
ICH9_SATA = "8086:2922"
ICH9_SMBUS = "8086:2930"
ICH9_LPC = "8086:2918"
IGBVF = "8086:10ca"

#: for the guest's pytest runs: the plugins a machine may have installed that no VM test uses
#: (hypothesis is the unit tests'; pytest-benchmark no test's), kept from loading: each is
#: imported at every pytest start, over 9p under TCG (measured: README, Time)
NO_UNUSED_PLUGINS = ("-p", "no:hypothesispytest", "-p", "no:benchmark")

#: how long a test waits for an interrupt it expects (s): one that fires arrives within
#: milliseconds, but a guest CPU whose wake-up the emulator lost wakes only when the heartbeats
#: nudge it (hangwatch.NUDGE_S, 15 s late; a 5 s wait on 7.3 ran out so, 2026-12-02)
IRQ_WAIT_S = 30.0

#: vfioctl's record of the devices it bound
STATE = Path("/run/vfioctl/state.json")


def state() -> dict:
    """The state file's records ({} if there is none)."""
    import json
    return json.loads(STATE.read_text()) if STATE.exists() else {}


#: what a test may declare with @pytest.mark.requires(...)
FEATURES = ("cdev", "legacy_container", "compat_container", "bind_token", "sriov", "usb")
XHCI = "1b36:000d"


def find_all(ids: str) -> list[str]:
    vendor, device = (int(x, 16) for x in ids.split(":"))
    return [d.name for d in sorted((SYS_PCI / "devices").iterdir())
            if int((d / "vendor").read_text(), 16) == vendor
            and int((d / "device").read_text(), 16) == device]


def find_pci(ids: str) -> str:
    found = find_all(ids)
    assert found, f"the VM has no {ids} device: check scripts/vm-run's QEMU devices"
    return found[0]


def load_driver(driver: str) -> None:
    """modprobe DRIVER unless it is registered already (built in, or a loaded module)."""
    if not (SYS_PCI / "drivers" / driver).is_dir():
        subprocess.run(["modprobe", driver], check=True)


def driver_of(bdf: str) -> str | None:
    link = SYS_PCI / "devices" / bdf / "driver"
    return os.path.basename(os.readlink(link)) if link.exists() else None


def bounded_write(path: Path, value: str, what: str, timeout: float = 90.0) -> None:
    """Write a sysfs attribute from a thread and fail naming what the kernel shows if the write
    has not returned after ``timeout`` s (an unbind that waits for a device's users), instead of
    hanging the whole suite without a word."""
    import threading

    err: list[BaseException] = []

    def write():
        try:
            path.write_text(value)
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller
            err.append(exc)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        from hangwatch import kernel_log, stuck_tasks

        log = kernel_log().splitlines()[-15:]
        raise AssertionError(f"{what} did not return in {timeout:.0f} s; kernel stacks of this "
                             "process's threads and of tasks in D state:\n"
                             + "\n".join(stuck_tasks()) + "\nkernel log: " + " | ".join(log))
    if err:
        raise err[0]


def sysfs_bind(bdf: str, driver: str | None) -> None:
    """Move ``bdf`` to ``driver`` (None: no driver) through driver_override + drivers_probe."""
    dev = SYS_PCI / "devices" / bdf
    if driver_of(bdf) == driver:
        return
    (dev / "driver_override").write_text(driver or "\n")
    if driver_of(bdf) is not None:
        if driver_of(bdf) == "vfio-pci":  # the kernel's unbind would wait for these forever
            from vfioctl.binding import vfio_users
            from vfioctl.pci import PciDevice
            users = vfio_users(PciDevice(bdf))
            # another process may hold it a moment: udev's worker had edu's new cdev open at a
            # fixture's teardown (6.12, 2026-12-08); this process's own fd fails at once
            me, deadline = f"(pid {os.getpid()})", time.monotonic() + 10
            while (users and not any(u.endswith(me) for u in users)
                   and time.monotonic() < deadline):
                time.sleep(0.1)
                users = vfio_users(PciDevice(bdf))
            assert not users, f"{bdf} is still open by {users}: a leaked fd (a test's own?)"
        bounded_write(dev / "driver" / "unbind", bdf, f"unbind {bdf} from {driver_of(bdf)}")
    if driver is not None:
        load_driver(driver)
        bounded_write(SYS_PCI / "drivers_probe", bdf, f"probe {bdf} with {driver}")
    (dev / "driver_override").write_text("\n")
    assert driver_of(bdf) == driver, f"{bdf} did not move to {driver}"


def wait_for(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _nvme_wait(bdf: str, pick, what: str, timeout: float) -> str:
    """Wait until ``pick(controller, entries)`` names a node that exists in /dev, and return
    its path: ``controller`` is the one directory in the device's sysfs ``nvme`` directory,
    ``entries`` what that holds. A timeout names what sysfs and /dev held."""
    ctrl = SYS_PCI / "devices" / bdf / "nvme"

    def listing():
        try:
            return {c: sorted(os.listdir(ctrl / c)) for c in os.listdir(ctrl)}
        except OSError:  # not there yet, or the driver is still probing or removing it
            return None

    def node():
        held = listing()
        name = held and len(held) == 1 and pick(*next(iter(held.items())))
        return name and os.path.exists(f"/dev/{name}") and f"/dev/{name}"
    try:
        return wait_for(node, timeout, what=f"{what} of {bdf}'s nvme controller")
    except AssertionError as e:
        raise AssertionError(f"{e} (sysfs {ctrl}: {listing()}; /dev: "
                             f"{sorted(n for n in os.listdir('/dev') if n.startswith('nvme'))})")


def nvme_node(bdf: str, timeout: float = 10.0) -> str:
    """The /dev node of the nvme controller at ``bdf``, once the driver has made it: its name
    is the kernel's (``nvme0`` unless an instance number was still held when it probed)."""
    return _nvme_wait(bdf, lambda ctrl, entries: ctrl, "the node", timeout)


#: a namespace in the controller's sysfs directory: its disk ``nvme<I>n<N>`` on a kernel without
#: nvme multipath; with it, the path ``nvme<S>c<C>n<N>``, whose disk is the head ``nvme<S>n<N>``
_NVME_NS = re.compile(r"nvme(\d+)(?:c\d+)?n(\d+)")


def nvme_disk(bdf: str, timeout: float = 10.0) -> str:
    """The /dev node of the disk of the nvme controller at ``bdf`` (its first namespace), once
    the kernel has made it: named as the kernel named it, not assumed to be ``nvme0n1``."""
    def disk(ctrl, entries):
        heads = sorted(f"nvme{m[1]}n{m[2]}" for e in entries if (m := _NVME_NS.fullmatch(e)))
        return heads[0] if heads else None
    return _nvme_wait(bdf, disk, "the disk", timeout)


def cdev_of(bdf: str) -> Path:
    """The device's /dev/vfio/devices/vfioN, checked to exist as a node."""
    vfio_dev = SYS_PCI / "devices" / bdf / "vfio-dev"
    name = wait_for(lambda: vfio_dev.is_dir() and next(iter(os.listdir(vfio_dev)), None),
                    what=f"{bdf}/vfio-dev")
    node = Path("/dev/vfio/devices") / name
    wait_for(node.exists, what=str(node))
    return node


_preloaded = False


def preload() -> None:
    """Import every vfioctl module, and every module one of them imports inside a function
    (pyudev, grp, ipaddress, ...), once per process. run_cli's child of another uid cannot
    import anything: the interpreter's files are under /root. A hand-kept list of modules
    missed doctor's lazily loaded stdlib (three failures on 7.3, 2026-12-02); this one reads
    the imports from the sources themselves."""
    global _preloaded
    if _preloaded:
        return
    import ast
    import importlib
    import pkgutil

    import vfioctl

    names = ["vfioctl"] + [m.name for m in pkgutil.walk_packages(vfioctl.__path__, "vfioctl.")
                           if not m.name.endswith(".__main__")]  # (that one runs the CLI)
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:  # the optional extension, not built (or hidden, as a test does)
            continue
        if not module.__file__.endswith(".py"):  # the extension: compiled, nothing to read
            continue
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.Import):
                deps = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                deps = [node.module]
            else:
                continue
            for dep in deps:
                try:
                    importlib.import_module(dep)
                except ImportError:
                    pass  # an optional module this machine lacks: the CLI copes without it
    _preloaded = True


def run_cli(*args: str, user: int | None = None, env: dict[str, str] | None = None,
            fresh: bool = False, inject=None, groups: tuple[int, ...] = ()) -> tuple[int, str, str]:
    """Run ``vfioctl ARGS`` in a child process: (exit status, stdout, stderr); ``env`` adds
    environment variables.

    The child is forked from this interpreter and runs the CLI's ``main`` (no exec): a real
    process with its own fds, exit status and stderr (an escaped exception prints its
    traceback), without the 2-3 s an interpreter start costs under TCG. ``fresh`` runs
    ``python -m vfioctl`` instead (the entry point itself). With ``user``, the child drops to
    that uid/gid first (the interpreter is under /root, which other users cannot enter, so it
    could not simply be exec'ed as them), with ``groups`` as its supplementary groups. ``inject`` is called in the child before the CLI
    runs: the harness's way to inject faults (patch a step to fail, pause or SIGKILL the child);
    production code carries no test hooks.
    """
    import subprocess

    if fresh:
        p = subprocess.run([sys.executable, "-m", "vfioctl", *args], capture_output=True,
                           text=True, timeout=120, env={**os.environ, **(env or {})})
        return p.returncode, p.stdout, p.stderr
    preload()  # before forking: the child of another uid can import nothing more
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 99
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in (out_r, err_r, out_w, err_w):
                os.close(fd)
            import hangwatch
            hangwatch.dump_stack_on_signal()  # a hang report asks for this child's stacks
            sys.stdin = open(os.devnull)
            sys.stdout = open(1, "w", closefd=False)  # not pytest's capture objects
            sys.stderr = open(2, "w", closefd=False)
            os.environ.update(env or {})
            # a fresh process holds no group: forget the parent's open ones (their fds stay
            # inherited, as across any fork, but this CLI run must open its own)
            from vfioctl.backend import ContainerBackend
            ContainerBackend._shared.clear()
            if user is not None:
                os.setgroups(list(groups))
                os.setgid(user)
                os.setuid(user)
            if inject is not None:
                inject()
            from vfioctl.cli import main
            main(list(args), prog_name="vfioctl", standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    import threading

    err_buf: list[str] = []
    reader = threading.Thread(target=lambda: err_buf.append(os.fdopen(err_r).read()))
    reader.start()  # both pipes drain at once: a chatty child cannot block on a full pipe
    with os.fdopen(out_r) as o:
        out = o.read()
    reader.join()
    _, status = os.waitpid(pid, 0)
    from hangwatch import stack_file
    stack_file(pid).unlink(missing_ok=True)
    return os.waitstatus_to_exitcode(status), out, err_buf[0]


def group_of(bdf: str) -> str:
    return os.path.basename(os.readlink(SYS_PCI / "devices" / bdf / "iommu_group"))


@functools.cache
def kernel_features() -> dict[str, bool]:
    """What the booted kernel offers, from what it shows at run time.

    cdev, legacy_container, compat_container: vfioctl.kernel (the vfio-dev char major,
    /dev/iommu, and who answers on /dev/vfio/vfio). bind_token: VFIO_DEVICE_BIND_IOMMUFD with
    VFIO_DEVICE_BIND_FLAG_TOKEN and a NULL token pointer on edu's fresh cdev: a kernel that
    knows the flag reads the token and answers EFAULT, one that does not answers EINVAL (the
    bind fails either way; nothing changes). sriov: the igb PF offers VFs (sriov_totalvfs).
    """
    from vfioctl.kernel import kernel_caps

    load_driver("vfio-pci")
    caps = kernel_caps()
    have = {
        "cdev": caps.cdev_usable,
        "legacy_container": caps.container == "legacy",
        "compat_container": caps.container == "iommufd",
        "bind_token": False,
        "sriov": False,
    }
    if have["cdev"]:
        have["bind_token"] = _bind_token_flag_known()
    pf = find_all(IGB)
    if pf:
        total = SYS_PCI / "devices" / pf[0] / "sriov_totalvfs"
        have["sriov"] = total.exists() and int(total.read_text()) > 0
    # usb: a kernel that drives the bed's xhci (and so sees the keyboard on it)
    subprocess.run(["modprobe", "xhci_pci"], capture_output=True)
    xhci = find_all(XHCI)
    have["usb"] = bool(xhci) and driver_of(xhci[0]) == "xhci_hcd"
    return have


@functools.cache
def offered_modes() -> list[str]:
    """The IOMMU modes the booted kernel serves, by vfioctl's own judgement (vfioctl.backend);
    test_testbed checks it against what the kernel shows."""
    from vfioctl.backend import mode_support
    from vfioctl.kernel import kernel_caps

    load_driver("vfio-pci")
    return [s.mode for s in mode_support(kernel_caps()) if s.available]


def _bind_token_flag_known() -> bool:
    import struct

    bdf = find_pci(EDU)
    before = driver_of(bdf)
    sysfs_bind(bdf, "vfio-pci")
    try:
        fd = os.open(cdev_of(bdf), os.O_RDWR)
        iommu = os.open("/dev/iommu", os.O_RDWR)
        try:
            # struct vfio_device_bind_iommufd of 7.x: argsz flags iommufd out_devid token_uuid_ptr
            arg = bytearray(struct.pack("=IIiIQ", 24, 1, iommu, 0, 0))
            from vfioctl import uapi
            try:
                fcntl.ioctl(fd, uapi.VFIO_DEVICE_BIND_IOMMUFD, arg, True)
            except OSError as exc:
                return exc.errno == errno.EFAULT
            raise AssertionError("BIND with a NULL token pointer succeeded")
        finally:
            os.close(fd)
            os.close(iommu)
    finally:
        sysfs_bind(bdf, before)


# --- edu's DMA engine (QEMU's hw/misc/edu.c) -------------------------------------------------
DMA_SRC, DMA_DST, DMA_CNT, DMA_CMD = 0x80, 0x88, 0x90, 0x98
#: edu's 4 KiB DMA buffer, as the device addresses it
EDU_BUF = 0x40000
#: edu's DMA mask: it reaches IOVAs below 256 MiB
MASK28 = 1 << 28


class Edu:
    """edu's DMA engine on an open session: one copy between its buffer and an IOVA."""

    def __init__(self, s):
        self.s = s
        self.bar0 = s.region("bar0")

    def dma(self, src, dst, count, to_ram, irq=False, timeout=10.0):
        b = self.bar0
        b.write(DMA_SRC, src, 8)
        b.write(DMA_DST, dst, 8)
        b.write(DMA_CNT, count, 8)
        b.write(DMA_CMD, 1 | (2 if to_ram else 0) | (4 if irq else 0), 8)
        deadline = time.monotonic() + timeout
        while b.read(DMA_CMD, 8) & 1:
            assert time.monotonic() < deadline, "edu DMA did not complete"
            time.sleep(0.005)
