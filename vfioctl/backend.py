"""IOMMU backends behind one interface, and the IOMMU modes, named as the kernel's VFIO selftest
library names them (tools/testing/selftests/vfio/lib/iommu.c):

| mode                     | device fd from         | DMA through                               |
|--------------------------|------------------------|-------------------------------------------|
| ``iommufd``              | the cdev, BIND         | /dev/iommu, an IOAS (IOMMU_IOAS_MAP)      |
| ``iommufd_compat_type1`` | the group              | /dev/vfio/vfio served by iommufd, type1   |
| ``iommufd_compat_type1v2`` | the group            | the same, type1v2                         |
| ``vfio_type1_iommu``     | the group              | VFIO's own container, type1               |
| ``vfio_type1v2_iommu``   | the group              | VFIO's own container, type1v2             |

``auto`` picks ``iommufd`` when the device has a cdev and /dev/iommu is usable, otherwise
type1v2 through whichever container the kernel has.

A backend opens devices ready to use (bound and attached, or taken from the group), owns the
DMA space (``backend.dma``: an IOAS or the container, one interface) and knows how a hot reset
names its devices. Everything else (regions, IRQs, resets) is the device's and the same in
every mode.
"""
from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass

from .container import Container, Group, iommu_type
from .device import Device
from .errors import EnvironmentProblem, KernelError, UsageError, VfioctlError
from .iommufd import IOMMU_PATH, IommuFD
from .iova import DmaSpace
from .kernel import KernelCaps, cdev_missing, container_kind, kernel_caps
from .pci import PciDevice, describe_members, member_blocks_vfio, node_users, require_cdev

MODES = ("iommufd", "iommufd_compat_type1", "iommufd_compat_type1v2", "vfio_type1_iommu",
         "vfio_type1v2_iommu")
AUTO = "auto"
ENV_MODE = "VFIOCTL_IOMMU_MODE"

#: mode -> (container kind, VFIO_SET_IOMMU type) for the group path
_GROUP_MODES = {
    "iommufd_compat_type1": ("iommufd", "type1"),
    "iommufd_compat_type1v2": ("iommufd", "type1v2"),
    "vfio_type1_iommu": ("legacy", "type1"),
    "vfio_type1v2_iommu": ("legacy", "type1v2"),
}


@dataclass(frozen=True)
class ModeSupport:
    mode: str
    available: bool
    why_not: str | None = None

    def to_dict(self) -> dict:
        return {"mode": self.mode, "available": self.available, "why_not": self.why_not}


def mode_support(caps: KernelCaps) -> list[ModeSupport]:
    """Whether this kernel can serve each mode, and if not why (what is missing)."""
    out = [ModeSupport("iommufd", caps.cdev_usable, cdev_missing(caps))]
    for mode, (kind, _t) in _GROUP_MODES.items():
        if not caps.group:
            why = ("no VFIO group support (CONFIG_VFIO_GROUP), or the vfio module is not "
                   "loaded (modprobe vfio-pci)")
        elif caps.container is None:
            why = "no /dev/vfio/vfio (CONFIG_VFIO_CONTAINER or CONFIG_IOMMUFD_VFIO_CONTAINER)"
        elif caps.container not in (kind, "unknown"):  # unknown: not ours to open; the
            # open itself will say so (permission denied, naming the node's group)
            why = ("/dev/vfio/vfio is served by iommufd (CONFIG_IOMMUFD_VFIO_CONTAINER), not "
                   "VFIO's own container" if kind == "legacy" else
                   "/dev/vfio/vfio is VFIO's own container, not iommufd's compat container "
                   "(CONFIG_IOMMUFD_VFIO_CONTAINER)")
        else:
            why = None
        out.append(ModeSupport(mode, why is None, why))
    return out


def requested_mode(requested: str | None) -> str:
    """The mode asked for: ``requested``, else $VFIOCTL_IOMMU_MODE, else ``auto``. A name that
    is neither ``auto`` nor one of MODES is a UsageError, naming the variable if it came from
    there (a session and a probe ask this before they look at the device)."""
    mode = (requested or _env_mode() or AUTO).strip()
    if mode != AUTO and mode not in MODES:
        raise UsageError(f"unknown IOMMU mode {mode!r}"
                         + ("" if requested else f" (from ${ENV_MODE})"),
                         hint=f"use one of: {AUTO}, {', '.join(MODES)}")
    return mode


_ENV_MODE_KEY = os.fsencode(ENV_MODE)


def _env_mode() -> str | None:
    """$VFIOCTL_IOMMU_MODE, read on every open. ``os.environ.get`` of an unset variable raises
    and catches two KeyErrors (9000 instructions, 7% of a session open's); os.environ's own
    dict (bytes keys on POSIX, updated by every change to os.environ) answers a miss without.
    Where the mapping has no such dict, os.environ.get it is."""
    data = getattr(os.environ, "_data", None)
    if type(data) is not dict:
        return os.environ.get(ENV_MODE)
    value = data.get(_ENV_MODE_KEY)
    return None if value is None else os.fsdecode(value)


def choose_mode(requested: str | None, pci: PciDevice, caps: KernelCaps | None = None) -> str:
    """The mode to open ``pci`` in: ``requested`` if the kernel serves it, else an error naming
    what is missing and the modes this host offers; ``auto`` (or None: $VFIOCTL_IOMMU_MODE,
    then auto) as the module says."""
    requested = requested_mode(requested)
    if caps is None:
        # what a session open can settle with a look at the nodes it is about to open, without
        # judging the whole kernel (a read of /proc/devices, /sys/class/iommu, the container):
        # the answer the judgement below would give; anything else goes to it, which also
        # says why a mode is not offered
        fast = _quick_mode(requested, pci)
        if fast is not None:
            return fast
    caps = caps or kernel_caps(pci.sysfs, pci.devfs)
    support = {s.mode: s for s in mode_support(caps)}
    offered = [m for m in MODES if support[m].available]
    if requested == AUTO:
        if support["iommufd"].available and pci.vfio_dev_name is not None:
            return "iommufd"
        for mode in ("vfio_type1v2_iommu", "iommufd_compat_type1v2"):
            if support[mode].available:
                return mode
        if support["iommufd"].available:
            return "iommufd"  # the device has no cdev (yet): require_cdev will say why
        raise EnvironmentProblem(
            "this host offers no IOMMU mode for VFIO: "
            + "; ".join(f"{s.mode}: {s.why_not}" for s in support.values()),
            hint="load vfio-pci (modprobe vfio-pci) and boot with the IOMMU on "
                 "(intel_iommu=on or amd_iommu=on)")
    s = support[requested]
    if not s.available:
        raise EnvironmentProblem(
            f"IOMMU mode {requested} is not available on this host: {s.why_not}",
            hint=("this host offers: " + ", ".join(offered)) if offered else
                 "this host offers no IOMMU mode for VFIO (load vfio-pci, turn the IOMMU on)")
    return requested


def open_backend(requested: str, pci: PciDevice, *,
                 iommu_path: str = IOMMU_PATH) -> tuple[IommuBackend, dict]:
    """The backend a session opens ``pci`` in (``requested``: requested_mode()'s answer), and what
    was read of the device on the way (``open_device``'s keywords: the cdev name or the group
    number, so that they are not read twice).

    Auto or iommufd asked for opens ``iommu_path`` at once and then reads the cdev name: its
    absence (ENOENT) or a device without a cdev (auto) sends auto to the group path; an iommufd
    asked for without the node goes to choose_mode's judgement, which says why. What the old
    look-first order found with a stat of each is found by the opens themselves."""
    if requested in (AUTO, "iommufd"):
        try:
            backend = IommufdBackend(iommu_path)
        except EnvironmentProblem as exc:
            if exc.errno != errno.ENOENT or exc.path != iommu_path:
                raise
        else:
            cdev = pci.vfio_dev_name
            if cdev is not None or requested == "iommufd":
                return backend, {"cdev_name": cdev}  # no cdev: open_device says why
            backend.close()
    if requested == AUTO or requested in _GROUP_MODES:
        found = _group_backend_by_node(requested, pci)
        if found is not None:
            return found
    # the whole judgement: it picks (auto), or says what is missing (a mode) or wrong (not a
    # mode: its error lists them)
    mode = choose_mode(requested, pci, kernel_caps(pci.sysfs, pci.devfs))
    if mode == "iommufd":
        return IommufdBackend(iommu_path), {}
    return _group_backend(mode, pci)


def _group_backend(mode: str, pci: PciDevice) -> tuple[IommuBackend, dict]:
    group_id = pci.iommu_group
    return ContainerBackend.for_group(mode, pci, group_id), {"group_id": group_id}


def _group_backend_by_node(requested: str, pci: PciDevice) -> tuple[IommuBackend, dict] | None:
    """The backend of a group mode asked for (or of auto's pick by the container's kind), the
    kind asked of the container it keeps: one open of /dev/vfio/vfio, where a look at the node
    before the backend's own open made and freed a second container in the kernel. None where
    the node does not open or serves the other kind: choose_mode's judgement says why."""
    group_id = pci.iommu_group
    shared = ContainerBackend._shared.get((str(pci.devfs), group_id))
    container = None  # the node opened here, for a backend of a group not open in this process
    try:
        if shared is None:
            try:
                container = Container(f"{pci.devfs_dir}/vfio/vfio")
            except VfioctlError:
                return None
        kind = shared.kind if container is None else container.served_by()
        mode = _AUTO_GROUP_MODE[kind] if requested == AUTO else requested
        if _GROUP_MODES[mode][0] == kind:
            return (ContainerBackend.for_group(mode, pci, group_id, container),
                    {"group_id": group_id})
    except BaseException:
        if container is not None:
            container.close()
        raise
    if container is not None:
        container.close()
    return None


#: held while a backend's users are counted and its groups join or leave
#: (ContainerBackend._shared): sessions may open and close from several threads, as the kernel
#: selftest library opens devices on one iommu from a thread each
_USERS_LOCK = threading.Lock()

def _require_group(pci: PciDevice, group_id: int | None) -> None:
    """EnvironmentProblem naming the fix where ``pci`` is in no IOMMU group."""
    if group_id is None:
        raise EnvironmentProblem(f"{pci.bdf} is in no IOMMU group", path=str(pci.path),
                                 hint="boot with the IOMMU on (intel_iommu=on or amd_iommu=on)")


#: auto's group mode by the container node's kind
_AUTO_GROUP_MODE = {"legacy": "vfio_type1v2_iommu", "iommufd": "iommufd_compat_type1v2"}


def _quick_mode(requested: str, pci: PciDevice) -> str | None:
    """``iommufd`` for a device with a cdev where /dev/iommu is there (auto or asked for); a
    group mode asked for, or auto's pick without a cdev, when the container node answers as
    that mode's kind; None where it takes the whole judgement to say."""
    if requested in (AUTO, "iommufd"):
        # vfio-dev/ is there only while the device has a cdev (its listing, for the name, is
        # the backend's: one stat here instead of a second listing)
        if (os.path.exists(f"{pci.sysfs_dir}/vfio-dev")
                and os.path.exists(f"{pci.devfs_dir}/iommu")):
            return "iommufd"
        if requested == "iommufd":
            return None
    kind = container_kind(f"{pci.devfs_dir}/vfio/vfio")
    if requested == AUTO:
        return _AUTO_GROUP_MODE.get(kind)
    return requested if _GROUP_MODES[requested][0] == kind else None


class IommuBackend:
    """What differs between the modes. ``dma`` is the DMA space all sessions of this backend
    map into."""

    mode: str
    dma: DmaSpace
    #: the sessions using this backend; it closes with the last (release)
    users = 1

    def share(self, pci: PciDevice) -> dict:
        """Another session's device ``pci`` joins this backend's DMA space (the kernel selftest
        library's devices on one iommu): counted as a user; returns open_device's keywords."""
        raise NotImplementedError

    def open_device(self, pci: PciDevice, vf_token: str | None = None, *,
                    cdev_name: str | None = None, group_id: int | None = None) -> Device:
        """``pci`` opened and ready: regions, IRQs and DMA work. ``cdev_name`` (the cdev path)
        and ``group_id`` (the group path): what the caller read of ``pci`` just now
        (open_backend); read again where not given."""
        raise NotImplementedError

    def release_device(self, device: Device) -> None:
        """Undo open_device; safe for a device already closed. Closing the fd is all of it in
        every mode: IRQs and mmaps go first (Device.close), and closing a bound cdev detaches
        and unbinds it in the kernel (vfio_df_unbind_iommufd), so no DETACH ioctl is needed."""
        device.close()

    def hot_reset_fds(self) -> list[int]:
        """The fds VFIO_DEVICE_PCI_HOT_RESET needs: none under iommufd (the devices of the
        iommufd prove ownership), the open group fds on the group path."""
        return []

    def describe(self) -> dict:
        return {"mode": self.mode}

    def release(self) -> None:
        """A session is done with the backend: the last one closes what it owns."""
        if self.users == 1:  # its one session: nothing else counts on it (and the lock's
            self.users = 0   # round trip is 2% of a session's open + close)
            self.close()
            return
        with _USERS_LOCK:
            self.users -= 1
            if self.users <= 0:
                self.close()

    def close(self) -> None:
        raise NotImplementedError


class IommufdBackend(IommuBackend):
    """The device cdev bound to a new /dev/iommu, attached to a new IOAS."""

    mode = "iommufd"

    def __init__(self, iommu_path: str = IOMMU_PATH):
        self.users = 1
        self.iommufd = IommuFD(iommu_path)
        try:
            self.ioas = self.iommufd.alloc_ioas()
        except BaseException:
            self.iommufd.close()
            raise
        self.dma = self.ioas

    def share(self, pci: PciDevice) -> dict:
        # the device binds to this iommufd and attaches to this IOAS (open_device)
        with _USERS_LOCK:
            self.users += 1
        return {}

    def open_device(self, pci: PciDevice, vf_token: str | None = None, *,
                    cdev_name: str | None = None, group_id: int | None = None) -> Device:
        # the cdev sysfs names, opened at once; require_cdev's checks (which say why there is
        # no cdev) run only when there is none to open
        name = cdev_name or pci.vfio_dev_name
        dev = None
        if name is not None:
            try:
                dev = Device(f"{pci.devfs_dir}/vfio/devices/{name}", bdf=pci.bdf)
            except EnvironmentProblem as exc:
                if exc.errno != errno.ENOENT:
                    raise
        if dev is None:
            dev = Device(str(require_cdev(pci)), bdf=pci.bdf)
        try:
            dev.bind(self.iommufd, vf_token=vf_token)
            dev.attach(self.ioas)
        except KernelError as exc:
            dev.close()
            if exc.errno == errno.EINVAL and exc.op == "VFIO_DEVICE_BIND_IOMMUFD":
                held_by = node_users([dev.path])  # with ours closed: who still holds it
                if held_by:
                    raise EnvironmentProblem(
                        f"{pci.bdf} is open already, bound through its cdev by "
                        f"{', '.join(held_by)}: the kernel binds a device once",
                        errno=exc.errno, op=exc.op, path=dev.path,
                        hint="close the other session of the device first") from None
            raise
        except BaseException:
            dev.close()
            raise
        return dev

    def describe(self) -> dict:
        return {"mode": self.mode, "iommufd": self.iommufd.path, "ioas": self.ioas.id}

    def close(self) -> None:
        # the iommufd is this backend's alone: closing it destroys the IOAS and unpins its
        # mappings in the kernel (iommufd_fops_release); the IOAS object then only forgets them
        # (and releases the buffers it kept exported), no ioctl per mapping or for the destroy
        try:
            self.iommufd.close()
        finally:
            self.ioas.close()


class ContainerBackend(IommuBackend):
    """The device's group set to a container (VFIO's own or iommufd's compat one) with a type1
    IOMMU. The kernel allows one open of a group node: in one process, every session on a
    device of an open group shares its ContainerBackend (``for_group``), counted, so the group
    and container close with the last of them."""

    _shared: dict[tuple[str, int], ContainerBackend] = {}

    def __init__(self, mode: str, pci: PciDevice, group_id: int,
                 container: Container | None = None):
        """``container``: /dev/vfio/vfio opened already (and its kind checked), or None: open
        it here. The backend owns it either way."""
        kind, type_name = _GROUP_MODES[mode]
        self.mode = mode
        self.kind = kind
        self.devfs = str(pci.devfs)
        self.users = 0
        self.groups: dict[int, Group] = {}
        self.container = Container(f"{self.devfs}/vfio/vfio") if container is None else container
        self.container.pins_pages = kind == "iommufd"
        self.dma = self.container
        try:
            self.join(pci, group_id)
            self.container.set_iommu(iommu_type(type_name))
        except BaseException:
            self.close()
            raise

    @classmethod
    def for_group(cls, mode: str, pci: PciDevice, group_id: int | None,
                  container: Container | None = None) -> ContainerBackend:
        """The backend of ``pci``'s group (number ``group_id``, as the caller read it), shared
        in this process. A new one takes ``container`` (see __init__); where the group has
        one, ``container`` is closed, unused; where this raises, the caller closes it (safe
        twice)."""
        _require_group(pci, group_id)
        with _USERS_LOCK:
            backend = cls._shared.get((str(pci.devfs), group_id))
            if backend is None:
                backend = cls(mode, pci, group_id, container)  # join() lists it in _shared
            elif container is not None:
                container.close()  # the group's backend has its own
            if backend.mode != mode:
                raise UsageError(
                    f"IOMMU group {group_id} is open in this process in mode {backend.mode}",
                    hint=f"open {pci.bdf} in mode {backend.mode} too, or close the other "
                         "session first")
            backend.users += 1
            return backend

    def share(self, pci: PciDevice) -> dict:
        """``pci``'s group joins this container, unless it is in it already; a group open in
        this process with another container cannot."""
        group_id = pci.iommu_group
        _require_group(pci, group_id)
        with _USERS_LOCK:
            if group_id not in self.groups:
                other = ContainerBackend._shared.get((str(pci.devfs), group_id))
                if other is not None:
                    raise UsageError(
                        f"IOMMU group {group_id} of {pci.bdf} is open in this process with "
                        "another container", hint="close the sessions of that group first (a "
                                                  "group is in one container at a time)")
                self.join(pci, group_id)
            self.users += 1
        return {"group_id": group_id}

    def join(self, pci: PciDevice, group_id: int) -> Group:
        """Open ``pci``'s group (number ``group_id``: the caller has read the link once), check
        it is viable, set it to the container; the group's sessions in this process share this
        backend from now on."""
        group = Group(group_id, self.devfs)
        try:
            if not group.viable:
                blockers = [m for m in pci.group_members() if member_blocks_vfio(m)]
                raise EnvironmentProblem(
                    f"VFIO group {group_id} is not viable: "
                    + (f"members on host drivers: {describe_members(blockers)}" if blockers
                       else "a member is bound to a driver that does DMA"),
                    path=group.path, op="VFIO_GROUP_GET_STATUS",
                    hint="bind every member of the group to vfio-pci (or leave it driverless)")
            group.set_container(self.container)
        except BaseException:
            group.close()
            raise
        self.groups[group_id] = group
        ContainerBackend._shared[(self.devfs, group_id)] = self
        return group

    def open_device(self, pci: PciDevice, vf_token: str | None = None, *,
                    cdev_name: str | None = None, group_id: int | None = None) -> Device:
        if group_id is None:
            group_id = pci.iommu_group
        group = self.groups.get(group_id) or self.join(pci, group_id)
        name = pci.bdf if vf_token is None else f"{pci.bdf} vf_token={vf_token}"
        fd = group.device_fd(name)
        return Device.adopt(fd, path=f"{group.path} ({pci.bdf})", bdf=pci.bdf)

    def hot_reset_fds(self) -> list[int]:
        return [g.fd for g in self.groups.values() if not g.closed]

    def describe(self) -> dict:
        return {"mode": self.mode, "container": self.container.path,
                "container_kind": self.kind, "groups": sorted(self.groups)}

    def close(self) -> None:
        for group_id in self.groups:
            key = (self.devfs, group_id)
            if ContainerBackend._shared.get(key) is self:
                del ContainerBackend._shared[key]
        try:
            if self.container.mappings:  # while the groups still hold the IOMMU domain
                self.container.unmap_all()
        except KernelError:
            pass  # closing the container releases them anyway
        finally:
            for g in reversed(list(self.groups.values())):
                g.close()
            self.groups.clear()
            self.container.close()
