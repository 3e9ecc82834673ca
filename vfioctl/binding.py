"""Safe bind/unbind through sysfs, with a crash-proof record of each device's original driver.

Every change happens under an exclusive lock (``/run/vfioctl/lock``) so that concurrent
invocations serialise. Before a device leaves its driver, its original driver is written to
``/run/vfioctl/state.json`` (atomically: temp file, fsync, rename); ``restore`` returns every
recorded device even after a crash. If a bind step fails, the device goes back to its original
driver before the command exits.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .pci import member_blocks_vfio
from .errors import BindingError, EnvironmentProblem, Refused, UsageError, VfioctlError
from .pci import (PciDevice, block_devices, drm_nodes, framebuffers, is_boot_vga,
                  net_interfaces, node_users, usb_devices, vfio_device_users)

VFIO_DRIVER = "vfio-pci"
STATE_DIR = Path(os.environ.get("VFIOCTL_STATE_DIR", "/run/vfioctl"))

Progress = Callable[[str], None]
T = TypeVar("T")


def _quiet(_msg: str) -> None:
    pass


@dataclass(frozen=True)
class BindResult:
    bdf: str
    original_driver: str | None
    cdev: str | None
    changed: bool

    def to_dict(self) -> dict:
        return {"bdf": self.bdf, "original_driver": self.original_driver, "cdev": self.cdev,
                "changed": self.changed}


@dataclass(frozen=True)
class UnbindResult:
    bdf: str
    driver: str | None
    changed: bool

    def to_dict(self) -> dict:
        return {"bdf": self.bdf, "driver": self.driver, "changed": self.changed}


# --- state file and lock -------------------------------------------------------------------------
class State:
    """``{bdf: {"original_driver": str|None, "ids": str, "recorded_at": float}}`` on disk; an
    SR-IOV PF's record also keeps ``sriov_numvfs`` (its VF count when it was bound), which
    restoring it recreates.

    Written atomically (a temporary file, fsync, rename, fsync of the directory); the previous
    good copy is kept as ``state.json.prev`` (hard-linked before the rename, so there is no moment
    without a state file). A corrupt, truncated, empty or foreign file is a one-line error naming
    the file and what to do; nothing is overwritten then."""

    def __init__(self, root: Path = STATE_DIR):
        self.root = root
        self.path = root / "state.json"
        self.prev = root / "state.json.prev"

    @staticmethod
    def parse(text: str) -> dict[str, dict]:
        """The records of a state file's text; ValueError saying what is wrong."""
        from .pci import parse_bdf

        if not text.strip():
            raise ValueError("it is empty")
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"it holds a JSON {type(data).__name__}, not vfioctl's records")
        for bdf, rec in data.items():
            try:
                ok = parse_bdf(bdf) == bdf
            except VfioctlError:
                ok = False
            if not ok or not isinstance(rec, dict) or "original_driver" not in rec:
                raise ValueError(f"entry {bdf!r} is not a vfioctl record")
            drv = rec["original_driver"]
            if drv is not None and (not isinstance(drv, str) or not drv or "/" in drv):
                raise ValueError(f"entry {bdf!r} names no valid driver ({drv!r})")
        return data

    def load(self) -> dict[str, dict]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise EnvironmentProblem(f"cannot read the state file {self.path}: "
                                     f"{os.strerror(exc.errno)}", errno=exc.errno,
                                     path=str(self.path),
                                     hint="run as root; it lists the devices whose original "
                                          "drivers vfioctl recorded") from None
        try:
            return self.parse(text)
        except (ValueError, UnicodeDecodeError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            try:
                self.parse(self.prev.read_text())
                fix = (f"the previous good copy is {self.prev}: check it and copy it over "
                       f"{self.path.name}, or remove {self.path.name} if no device is on "
                       "vfio-pci because of vfioctl")
            except (OSError, ValueError, UnicodeDecodeError):
                fix = ("check it by hand (it lists devices and their original drivers), or "
                       "remove it if no device is on vfio-pci because of vfioctl")
            raise EnvironmentProblem(f"the state file {self.path} is corrupt: {why}",
                                     path=str(self.path), hint=fix) from None

    def save(self, data: dict[str, dict]) -> None:
        tmp = self.path.with_name(f".state.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        if self.path.exists():  # keep the good copy: link it, then rename the link over .prev
            link = self.path.with_name(f".state.{os.getpid()}.prev")
            link.unlink(missing_ok=True)
            os.link(self.path, link)
            os.replace(link, self.prev)
        os.replace(tmp, self.path)
        dfd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @contextmanager
    def locked(self, progress: Progress = _quiet, timeout: float = 120) -> Iterator[State]:
        try:
            self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:
            raise EnvironmentProblem(f"cannot write {self.root}", path=str(self.root),
                                     hint="binding changes drivers: run as root") from None
        try:
            deadline = time.monotonic() + timeout
            told = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not told:
                        progress("waiting for another vfioctl to finish binding...")
                        told = True
                    if time.monotonic() > deadline:
                        raise BindingError(
                            f"another vfioctl held {self.root / 'lock'} for {timeout:.0f} s",
                            path=str(self.root / "lock"),
                            hint="wait for it to finish, or find it with `fuser "
                                 f"{self.root / 'lock'}`") from None
                    time.sleep(0.05)
            yield self
        finally:
            os.close(fd)  # releases the lock


# --- sysfs writes --------------------------------------------------------------------------------
def _write(path: Path, value: str, what: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except PermissionError:
        if os.geteuid() == 0 and not os.path.exists(path):
            # the driver registered no such attribute (suppress_bind_attrs)
            raise BindingError(f"{what} is not possible: {path} does not exist (the driver "
                               "offers no such attribute)", path=str(path), op=what,
                               hint="this driver cannot be unbound through sysfs; remove the "
                                    "device or load the kernel without it") from None
        raise EnvironmentProblem(f"permission denied writing {path}", path=str(path),
                                 hint="binding changes drivers: run as root") from None
    except OSError as exc:
        raise BindingError(f"{what} failed: {os.strerror(exc.errno)} ({path})", errno=exc.errno,
                           op=what, path=str(path)) from None


def _drivers(dev: PciDevice) -> Path:
    return dev.sysfs / "bus/pci/drivers"


def driver_exists(dev: PciDevice, name: str) -> bool:
    return (_drivers(dev) / name).is_dir()


def ensure_vfio_driver(dev: PciDevice) -> None:
    if driver_exists(dev, VFIO_DRIVER):
        return
    # best effort (the kernel may have it built in, or no modprobe); the check below decides
    subprocess.run(["modprobe", "vfio-pci"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    if not driver_exists(dev, VFIO_DRIVER):
        raise EnvironmentProblem("the vfio-pci driver is not available",
                                 path=str(_drivers(dev) / VFIO_DRIVER),
                                 hint="load it (`modprobe vfio-pci`); the kernel needs "
                                      "CONFIG_VFIO_PCI; `vfioctl doctor` checks this")


def move_to(dev: PciDevice, driver: str | None) -> None:
    """Put ``dev`` on ``driver`` (None: no driver) with driver_override + drivers_probe."""
    _write(dev.path / "driver_override", (driver or "") + "\n", "set driver_override")
    current = dev.driver
    if current is not None and current != driver:
        _write(dev.path / "driver/unbind", dev.bdf, f"unbind from {current}")
    if driver is not None and dev.driver != driver:
        _write(dev.sysfs / "bus/pci/drivers_probe", dev.bdf, f"probe {driver}")


def vfio_node(dev: PciDevice) -> Path | None:
    """The node the kernel makes for a device on vfio-pci, if it is there: the device cdev
    where the kernel has cdevs, else the group node /dev/vfio/GROUP."""
    node = dev.cdev_path
    if node is not None:
        return node
    from .kernel import kernel_caps

    if not kernel_caps(dev.sysfs, dev.devfs).cdev and dev.iommu_group is not None:
        group = dev.devfs / "vfio" / str(dev.iommu_group)
        return group if group.exists() else None
    return None


def poll(step: Callable[[], T | None], timeout: float, *, interval: float,
         waiting: Callable[[], str], expired: Callable[[], Exception],
         progress: Progress, say_every: float = 1.0) -> T:
    """Call ``step()`` until it returns something (returned) or ``timeout`` s pass (``expired()``
    is raised), telling ``progress`` what it waits for every ``say_every`` s. Ctrl-C ends it
    (KeyboardInterrupt): each wait of binding is bounded and interruptible."""
    deadline = time.monotonic() + timeout
    told = 0.0
    while True:
        got = step()
        if got is not None:
            return got
        now = time.monotonic()
        if now > deadline:
            raise expired()
        if now - told >= say_every:
            progress(waiting())
            told = now
        time.sleep(interval)


def wait_for_cdev(dev: PciDevice, timeout: float, progress: Progress) -> str:
    """Wait for what the kernel makes: the cdev, or (a kernel without cdevs) the group node."""
    def step() -> str | None:
        node = vfio_node(dev)
        return str(node) if node is not None else None

    return poll(step, timeout, interval=0.02, progress=progress,
                waiting=lambda: f"waiting for {dev.bdf}'s /dev/vfio node...",
                expired=lambda: BindingError(
                    f"{dev.bdf}: no VFIO node (/dev/vfio/devices/vfioN or "
                    f"/dev/vfio/{dev.iommu_group}) appeared within {timeout:.0f} s",
                    path=str(dev.path),
                    hint="check that devtmpfs or udev creates the /dev/vfio nodes "
                         "(`vfioctl doctor` checks the set-up)"))


# --- checks --------------------------------------------------------------------------------------
def in_use_reasons(dev: PciDevice) -> list[str]:
    """Why the host is using ``dev``, each naming the user and the way out; empty if unused.
    Bind refuses a device with reasons unless forced (the reasons say what forcing costs)."""
    reasons = []
    for nif in net_interfaces(dev):
        what = []
        if nif.addresses:
            what.append("carries " + ", ".join(nif.addresses))
        if nif.routes:
            what.append("routes " + ", ".join(nif.routes))
        if what:
            reasons.append(f"network interface {nif.name} " + " and ".join(what)
                           + f" (remove them and take it down: `ip addr flush dev {nif.name}; "
                             f"ip link set {nif.name} down`)")
        elif nif.up:
            reasons.append(f"network interface {nif.name} is up "
                           f"(take it down: `ip link set {nif.name} down`)")
    for blk in block_devices(dev):
        if blk.mountpoints:
            reasons.append(f"block device {blk.name} is mounted on {', '.join(blk.mountpoints)} "
                           f"(unmount it)")
        if blk.holders:
            on = (f", mounted on {', '.join(blk.stacked_mounts)}" if blk.stacked_mounts else "")
            reasons.append(f"block device {blk.name} is held by {', '.join(blk.holders)}{on}")
        if blk.swap:
            reasons.append(f"block device {blk.name} is in use as swap (swapoff /dev/{blk.name})")
        if blk.busy and not (blk.mountpoints or blk.holders or blk.swap):
            reasons.append(f"block device {blk.name} is held: the kernel refuses an exclusive "
                           "open (a filesystem, volume or program has it; `fuser -v "
                           f"/dev/{blk.name}` or `lsblk /dev/{blk.name}` shows who)")
    if is_boot_vga(dev):
        reasons.append("it is the boot display (boot_vga): the console and the firmware's "
                       "screen are on it")
    fbs = framebuffers(dev)
    if fbs:
        reasons.append(f"framebuffer {', '.join(fbs)} is registered on it (the console may be "
                       "on it)")
    drm = drm_nodes(dev)
    clients = node_users([f"{dev.devfs}/dri/{n}" for n in drm]) if drm else []
    if clients:
        reasons.append(f"its DRM nodes ({', '.join(drm)}) are open by {', '.join(clients)} "
                       "(a display server or compute job)")
    usb = usb_devices(dev)
    if usb:
        reasons.append(f"it is a USB host controller with devices attached: {', '.join(usb)} "
                       "(a keyboard or disk on it goes with it)")
    return reasons


def plan(devices: list[PciDevice], *, group: bool, force: bool) -> list[PciDevice]:
    """The devices to bind (with --group, their group's host-bound members too); raises Refused
    with the reason and the way out."""
    wanted = {d.bdf: d for d in devices}
    for d in devices:
        if d.is_pci_bridge:
            raise Refused(f"{d.bdf} is a PCI bridge (header type {d.header_type}): vfio-pci "
                          "does not take bridges", path=str(d.path),
                          hint="bind the devices behind the bridge instead")
        blockers = [m for m in d.group_members() if m.bdf not in wanted and member_blocks_vfio(m)]
        if blockers and not group:
            names = ", ".join(f"{m.bdf} ({m.driver})" for m in blockers)
            raise Refused(f"{d.bdf}'s IOMMU group {d.iommu_group} has members still on host "
                          f"drivers: {names}", path=str(d.path),
                          hint="bind the whole group (each member is recorded and restorable); "
                               "forcing does not override this", fix="group")
        for m in blockers:
            if m.is_pci_bridge:
                raise Refused(f"{d.bdf}'s IOMMU group {d.iommu_group} cannot be made usable: "
                              f"{m.bdf} is a PCI bridge on {m.driver}, which vfio-pci does not "
                              "take", path=str(d.path),
                              hint="the group cannot be given to vfio on this topology")
            wanted.setdefault(m.bdf, m)
    targets = list(wanted.values())
    for d in targets:
        vfs = [v for v in d.virtfns() if v.bdf not in wanted] if d.sriov_totalvfs else []
        held = [v for v in vfs if (v.driver or "").startswith("vfio")]
        if held:  # never, whatever is forced: a VFIO user (a VM, a test) has them
            raise Refused(f"{d.bdf} is an SR-IOV PF whose VFs {', '.join(v.bdf for v in held)} "
                          f"are on {held[0].driver}: binding the PF removes its VFs",
                          path=str(d.path),
                          hint="close what uses those VFs and return them to their drivers "
                               "(unbind) first")
        bound = [v for v in vfs if v.driver]
        if bound and not force:
            names = ", ".join(f"{v.bdf} ({v.driver})" for v in bound)
            raise Refused(f"{d.bdf} is an SR-IOV PF whose VFs are bound to drivers: {names}; "
                          "binding the PF removes its VFs (their count is recorded and "
                          "restoring the PF recreates them)", path=str(d.path),
                          hint="stop using the VFs, or force the bind", fix="force")
    for d in targets:  # never, whatever is forced: the machine's own root filesystem
        roots = [b.name for b in block_devices(d)
                 if "/" in b.mountpoints or "/" in b.stacked_mounts]
        if roots:
            raise Refused(f"{d.bdf} holds the root filesystem (/ on {roots[0]}): it is never "
                          "taken", path=str(d.path),
                          hint="this device cannot be given to vfio while the system runs "
                               "from it")
    if not force:
        for d in targets:
            reasons = in_use_reasons(d)
            if d.is_bridge:  # host, ISA/LPC bridge functions: the platform may depend on them
                reasons.insert(0, f"it is a bridge-class function (class {d.pci_class:#08x})"
                               + (f" on {d.driver}" if d.driver else "")
                               + ": the platform may depend on it")
            if reasons:
                raise Refused(f"{d.bdf} is in use: " + "; ".join(reasons), path=str(d.path),
                              hint="stop using it, or force the bind", fix="force")
    return targets


# --- bind / unbind / restore ---------------------------------------------------------------------
def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(f"{action} changes kernel drivers and needs root (uid is "
                                 f"{os.geteuid()})", hint=f"run as root: sudo vfioctl {action} ...")


def bind(devices: list[PciDevice], *, group: bool = False, force: bool = False,
         dry_run: bool = False, timeout: float = 10.0, progress: Progress = _quiet,
         state: State | None = None) -> list[BindResult]:
    state = state or State()
    if dry_run:
        targets = plan(devices, group=group, force=force)
        out = []
        for d in targets:
            cur = d.driver
            if cur == VFIO_DRIVER:
                progress(f"{d.bdf}: already on {VFIO_DRIVER}; nothing to do")
            else:
                progress(f"{d.bdf}: record original driver {cur or '(none)'} in {state.path}")
                if d.sriov_numvfs:
                    progress(f"{d.bdf}: record sriov_numvfs {d.sriov_numvfs} (its VFs go when "
                             "it is unbound; restoring it recreates them)")
                progress(f"{d.bdf}: write {VFIO_DRIVER} to {d.path / 'driver_override'}")
                if cur:
                    progress(f"{d.bdf}: write {d.bdf} to {d.path / 'driver/unbind'}")
                progress(f"{d.bdf}: write {d.bdf} to {d.sysfs / 'bus/pci/drivers_probe'}")
                progress(f"{d.bdf}: wait for its /dev/vfio node (the cdev, or the group)")
            node = vfio_node(d)
            out.append(BindResult(d.bdf, cur, str(node) if node else None, False))
        return out
    require_root("bind")
    results: list[BindResult] = []
    with state.locked(progress):
        # the plan is made under the lock: what another bind changed meanwhile counts
        targets = plan(devices, group=group, force=force)
        ensure_vfio_driver(targets[0])
        for d in targets:
            try:
                results.append(_bind_one(d, state, timeout, progress))
            except BaseException as exc:
                # all or nothing: return the devices this call already moved
                moved = {t.bdf: t for t in targets}
                back = _undo_binds([(moved[r.bdf], r) for r in results if r.changed], state,
                                   progress)
                if back and isinstance(exc, VfioctlError):
                    exc.message += "; " + back
                    exc.args = (exc.message,)
                raise
    return results


def _undo_binds(done: list[tuple[PciDevice, BindResult]], state: State,
                progress: Progress) -> str:
    """Return devices this bind moved to their original drivers; says what happened."""
    if not done:
        return ""
    records = state.load()
    ok, failed = [], []
    for d, r in reversed(done):
        try:
            progress(f"{r.bdf}: returning it to {r.original_driver or '(no driver)'}")
            _restore_one(d, r.original_driver, records, state)
            ok.append(r.bdf)
        except Exception as exc:  # the state file keeps its record: restore finishes the job
            failed.append(f"{r.bdf} ({exc})")
    said = f"returned {', '.join(ok)} to their drivers" if ok else ""
    if failed:
        said += ("; " if said else "") + f"could not return {', '.join(failed)} (vfioctl restore)"
    return said


def _bind_one(d: PciDevice, state: State, timeout: float, progress: Progress) -> BindResult:
    records = state.load()
    original = d.driver
    if original == VFIO_DRIVER:
        rec = records.get(d.bdf)
        cdev = wait_for_cdev(d, timeout, progress)
        progress(f"{d.bdf}: already on {VFIO_DRIVER} ({cdev})")
        return BindResult(d.bdf, rec["original_driver"] if rec else None, cdev, False)
    if d.bdf not in records:
        records[d.bdf] = {"original_driver": original, "ids": d.ids, "recorded_at": time.time()}
        if d.sriov_numvfs:
            records[d.bdf]["sriov_numvfs"] = d.sriov_numvfs
        state.save(records)
    else:
        original = records[d.bdf]["original_driver"]
    try:
        progress(f"{d.bdf}: {d.driver or '(no driver)'} -> {VFIO_DRIVER}")
        move_to(d, VFIO_DRIVER)
        if d.driver != VFIO_DRIVER:
            raise BindingError(f"{d.bdf}: {VFIO_DRIVER} did not take the device",
                               path=str(d.path), hint="see `dmesg` for vfio-pci's reason")
        cdev = wait_for_cdev(d, timeout, progress)
    except BaseException as exc:
        progress(f"{d.bdf}: bind failed; returning it to {original or '(no driver)'}")
        try:
            _restore_one(d, original, records, state)
        except Exception as again:
            if isinstance(exc, BindingError):
                exc.hint = (exc.hint or "") + f"; restoring {original} also failed: {again}" \
                    " (run `vfioctl restore`)"
        raise
    return BindResult(d.bdf, original, cdev, True)


def return_to(d: PciDevice, driver: str | None) -> bool:
    """Put ``d`` back on ``driver`` (None: no driver) and clear driver_override; whether
    anything changed. Raises BindingError if the driver does not take it."""
    changed = d.driver != driver or d.driver_override is not None
    move_to(d, driver)
    _write(d.path / "driver_override", "\n", "clear driver_override")
    if driver is not None and d.driver != driver:
        raise BindingError(f"{d.bdf}: driver {driver} did not take the device back",
                           path=str(d.path),
                           hint="see `dmesg`; name another driver to return it to",
                           fix="driver")
    return changed


def vfio_users(d: PciDevice) -> list[str]:
    """The processes that have ``d`` open through VFIO (its cdev, or a device fd from its
    group): unbinding it from vfio-pci blocks in the kernel until they close it."""
    if d.driver != VFIO_DRIVER:
        return []
    return vfio_device_users(d)


def wait_released(d: PciDevice, timeout: float, progress: Progress) -> None:
    """Wait (at most ``timeout`` s, Ctrl-C ends it) until no process has ``d`` open through
    VFIO; BindingError naming them if they still do. Unbinding a device that is open blocks in
    the kernel with no way out, so vfioctl never writes the unbind while one is."""
    users: list[str] = []
    me = f"(pid {os.getpid()})"

    def step() -> bool | None:
        users[:] = vfio_users(d)
        if any(u.endswith(me) for u in users):
            raise BindingError(f"{d.bdf} is open in this process: unbinding it would wait for "
                               "this process itself", path=str(d.path),
                               hint="close the session (and any other fd of the device) first")
        return True if not users else None

    poll(step, timeout, interval=0.1, progress=progress, say_every=2.0,
         waiting=lambda: f"{d.bdf}: waiting for {', '.join(users)} to close it...",
         expired=lambda: BindingError(
             f"{d.bdf} is still open by {', '.join(users)} after {timeout:.0f} s: unbinding "
             "it would block until they close it", path=str(d.path),
             hint="end or close those programs, then run this again; the device stays on "
                  "vfio-pci and its record is kept"))


def _restore_one(d: PciDevice, driver: str | None, records: dict, state: State,
                 timeout: float = 10.0, progress: Progress = _quiet) -> bool:
    if driver != VFIO_DRIVER:
        wait_released(d, timeout, progress)
    changed = return_to(d, driver)
    numvfs = (records.get(d.bdf) or {}).get("sriov_numvfs") or 0
    if numvfs and not d.sriov_numvfs:
        recreate_vfs(d, numvfs)  # raises with the record kept: restore can try again
    if d.bdf in records:
        del records[d.bdf]
        state.save(records)
    return changed


def recreate_vfs(pf: PciDevice, count: int, timeout: float = 20.0) -> None:
    """Write the recorded VF count back to a PF that is on its driver again."""
    if pf.driver is None:
        raise BindingError(f"{pf.bdf} had {count} VFs, but with no driver it cannot create "
                           "them", path=str(pf.path),
                           hint="return it to a driver that supports SR-IOV (its original "
                                "one), then set the VF count")
    _write(pf.path / "sriov_numvfs", str(count), f"recreating its {count} VFs")
    wait_for_vfs(pf, count, timeout)


def wait_for_vfs(pf: PciDevice, count: int, timeout: float) -> None:
    """Wait until the PF shows ``count`` VFs (the kernel adds and removes them one by one)."""
    deadline = time.monotonic() + timeout
    while len(pf.virtfns()) != count:
        if time.monotonic() > deadline:
            raise BindingError(f"{pf.bdf}: expected {count} VFs within {timeout:.0f} s, have "
                               f"{len(pf.virtfns())}", path=str(pf.path / "sriov_numvfs"),
                               hint="see dmesg")
        time.sleep(0.05)


def unbind(devices: list[PciDevice], *, driver: str | None = None, progress: Progress = _quiet,
           state: State | None = None, timeout: float = 10.0) -> list[UnbindResult]:
    """Return each device to ``driver`` or its recorded original driver. Idempotent. A device
    some process still has open is waited for up to ``timeout`` s, then refused naming it."""
    state = state or State()
    require_root("unbind")
    if driver is not None and devices and not driver_exists(devices[0], driver):
        raise UsageError(f"no PCI driver named {driver!r} is loaded",
                         hint=f"load it first (`modprobe {driver}`), or check the name in "
                              "/sys/bus/pci/drivers")
    out = []
    with state.locked(progress):
        records = state.load()
        for d in devices:
            rec = records.get(d.bdf)
            if driver is not None:
                target = driver
            elif rec is not None:
                target = rec["original_driver"]
            elif d.driver == VFIO_DRIVER:
                raise UsageError(f"{d.bdf} is on {VFIO_DRIVER} but vfioctl has no record of its "
                                 "original driver", path=str(d.path),
                                 hint="name the driver to return it to", fix="driver")
            else:
                progress(f"{d.bdf}: on {d.driver or '(no driver)'}; nothing to do")
                out.append(UnbindResult(d.bdf, d.driver, False))
                continue
            progress(f"{d.bdf}: {d.driver or '(no driver)'} -> {target or '(no driver)'}")
            changed = _restore_one(d, target, records, state, timeout, progress)
            out.append(UnbindResult(d.bdf, d.driver, changed))
    return out


def restore(progress: Progress = _quiet, state: State | None = None,
            sysfs: Path | None = None, timeout: float = 10.0) -> list[UnbindResult]:
    """Return every device in the state file to its original driver. Idempotent. A device some
    process still has open is waited for up to ``timeout`` s, then refused naming it."""
    from .pci import SYSFS

    state = state or State()
    require_root("restore")
    out = []
    with state.locked(progress):
        records = state.load()
        for bdf, rec in sorted(records.items()):
            d = PciDevice(bdf, sysfs or SYSFS)
            if not d.exists():
                progress(f"{bdf}: gone from this machine; forgetting it")
                del records[bdf]
                state.save(records)
                continue
            progress(f"{bdf}: {d.driver or '(no driver)'} -> {rec['original_driver'] or '(no driver)'}")
            changed = _restore_one(d, rec["original_driver"], records, state, timeout,
                                   progress)
            out.append(UnbindResult(bdf, d.driver, changed))
    return out


def tty_progress(msg: str) -> None:
    if sys.stderr.isatty():
        print(msg, file=sys.stderr, flush=True)


__all__ = ["bind", "unbind", "restore", "State", "BindResult", "UnbindResult", "plan",
           "in_use_reasons"]


# --- SR-IOV ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SriovState:
    pf: str
    driver: str | None
    total: int
    current: int
    vfs: tuple[dict, ...]  # {"bdf", "ids", "driver", "iommu_group"}

    def to_dict(self) -> dict:
        return {"pf": self.pf, "driver": self.driver, "totalvfs": self.total,
                "numvfs": self.current, "vfs": list(self.vfs)}


def sriov_state(pf: PciDevice) -> SriovState:
    total = pf.sriov_totalvfs
    if total is None:
        raise UsageError(f"{pf.bdf} is not an SR-IOV physical function (no sriov_totalvfs)",
                         path=str(pf.path), hint="name the PF; a VF's PF is its physfn link")
    vfs = tuple({"bdf": v.bdf, "ids": v.ids, "driver": v.driver, "iommu_group": v.iommu_group}
                for v in pf.virtfns())
    return SriovState(pf.bdf, pf.driver, total, pf.sriov_numvfs or 0, vfs)


def set_numvfs(pf: PciDevice, count: int, *, timeout: float = 20.0, autoprobe: bool | None = None,
               progress: Progress = _quiet) -> SriovState:
    """Set the PF's VF count (0 removes them) through sriov_numvfs, under the bind lock.

    VFs that vfio-pci holds are never removed from under their users: a change that would remove
    one is refused, naming them. The kernel takes a new non-zero count only from zero, so a change
    between two non-zero counts goes through 0. ``autoprobe`` (if not None) is written to the
    PF's sriov_drivers_autoprobe first: False leaves the new VFs without a driver."""
    st = sriov_state(pf)
    if not 0 <= count <= st.total:
        raise UsageError(f"{pf.bdf} can have 0..{st.total} VFs; asked for {count}",
                         hint=f"give a count from 0 to {st.total}")
    require_root("sriov")
    with State().locked(progress):
        current = pf.sriov_numvfs or 0
        if count == current:
            return sriov_state(pf)
        held = [v for v in pf.virtfns() if (v.driver or "").startswith("vfio")]
        if held:
            raise Refused(f"{pf.bdf}'s VFs {', '.join(v.bdf for v in held)} are bound to "
                          f"{held[0].driver}: changing the VF count would remove them",
                          path=str(pf.path),
                          hint="return them to their drivers (unbind) first")
        numvfs = pf.path / "sriov_numvfs"
        if current:
            progress(f"{pf.bdf}: sriov_numvfs {current} -> 0")
            _write(numvfs, "0", "removing the VFs")
        if count and autoprobe is not None:
            progress(f"{pf.bdf}: sriov_drivers_autoprobe -> {int(autoprobe)}")
            _write(pf.path / "sriov_drivers_autoprobe", str(int(autoprobe)),
                   "setting sriov_drivers_autoprobe")
        if count:
            progress(f"{pf.bdf}: sriov_numvfs 0 -> {count}")
            _write(numvfs, str(count), "creating the VFs")
        wait_for_vfs(pf, count, timeout)
    return sriov_state(pf)
