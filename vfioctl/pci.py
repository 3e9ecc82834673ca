"""A PCI device as sysfs shows it, and the DEVICE argument every command takes.

DEVICE is a BDF in full or short form (``0000:01:00.0``, ``01:00.0``), a cdev name (``vfio0``)
or a cdev path (``/dev/vfio/devices/vfio0``). Reads only; binding.py writes.
"""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import DeviceNotFound, EnvironmentProblem, NotBoundToVfio, UsageError

SYSFS = Path("/sys")
DEVFS = Path("/dev")

_BDF = re.compile(r"^(?:(?P<dom>[0-9a-fA-F]{1,4}):)?(?P<bus>[0-9a-fA-F]{1,2}):"
                  r"(?P<dev>[0-9a-fA-F]{1,2})\.(?P<fn>[0-7])$")
_CDEV = re.compile(r"^(?:/dev/vfio/devices/)?(vfio\d+)$")

PCI_CLASS_BRIDGE = 0x06


def parse_bdf(text: str) -> str:
    """Normalise a BDF (``1:0.0`` → ``0000:01:00.0``); UsageError if it is not one."""
    m = _BDF.match(text.strip())
    if not m:
        raise UsageError(f"{text!r} is not a PCI address",
                         hint="use DDDD:BB:DD.F or BB:DD.F (e.g. 0000:01:00.0 or 01:00.0), "
                              "a cdev name such as vfio0, or /dev/vfio/devices/vfioN")
    dom = int(m["dom"] or "0", 16)
    bus, dev, fn = int(m["bus"], 16), int(m["dev"], 16), int(m["fn"])
    if dev > 0x1F:
        raise UsageError(f"{text!r}: device number {dev:#x} is above 0x1f",
                         hint="a PCI device number is 00..1f")
    return f"{dom:04x}:{bus:02x}:{dev:02x}.{fn}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _link_name(path: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


@dataclass(frozen=True)
class PciDevice:
    """One PCI function, read from sysfs when asked (properties are live)."""

    bdf: str
    sysfs: Path = SYSFS
    devfs: Path = DEVFS

    @property
    def path(self) -> Path:
        return self.sysfs / "bus/pci/devices" / self.bdf

    def exists(self) -> bool:
        return self.path.exists()

    def _hex(self, name: str) -> int:
        v = _read(self.path / name)
        return int(v, 16) if v else 0

    @property
    def vendor(self) -> int:
        return self._hex("vendor")

    @property
    def device(self) -> int:
        return self._hex("device")

    @property
    def ids(self) -> str:
        return f"{self.vendor:04x}:{self.device:04x}"

    @property
    def pci_class(self) -> int:
        return self._hex("class")

    @property
    def is_bridge(self) -> bool:
        """A bridge-class function (class 0x06: host, ISA/LPC, PCI-to-PCI ... bridges)."""
        return (self.pci_class >> 16) == PCI_CLASS_BRIDGE

    @property
    def header_type(self) -> int:
        """The config header layout (0: a normal function; 1: PCI-to-PCI bridge; 2: CardBus);
        0 if config space cannot be read."""
        try:
            with open(self.path / "config", "rb") as f:
                f.seek(0x0E)
                return f.read(1)[0] & 0x7F
        except (OSError, IndexError):
            return 0

    @property
    def is_pci_bridge(self) -> bool:
        """A bridge vfio-pci refuses: its header is not the normal one."""
        return self.header_type != 0

    @property
    def driver(self) -> str | None:
        return _link_name(self.path / "driver")

    @property
    def driver_override(self) -> str | None:
        v = _read(self.path / "driver_override")
        return None if v in (None, "", "(null)") else v

    @property
    def iommu_group(self) -> int | None:
        g = _link_name(self.path / "iommu_group")
        return int(g) if g is not None else None

    def group_members(self) -> list[PciDevice]:
        g = self.iommu_group
        if g is None:
            return [self]
        devs = self.sysfs / "kernel/iommu_groups" / str(g) / "devices"
        try:
            names = sorted(os.listdir(devs))
        except OSError:
            return [self]
        return [PciDevice(n, self.sysfs, self.devfs) for n in names]

    # --- SR-IOV ---------------------------------------------------------------------------------
    @property
    def sriov_totalvfs(self) -> int | None:
        """How many VFs the PF can have; None for a device that is no SR-IOV PF."""
        v = _read(self.path / "sriov_totalvfs")
        return int(v) if v else None

    @property
    def sriov_numvfs(self) -> int | None:
        v = _read(self.path / "sriov_numvfs")
        return int(v) if v else None

    def virtfns(self) -> list[PciDevice]:
        """The PF's VFs now, in VF order (sysfs virtfnN links)."""
        out = []
        n = 0
        while True:
            name = _link_name(self.path / f"virtfn{n}")
            if name is None:
                return out
            out.append(PciDevice(name, self.sysfs, self.devfs))
            n += 1

    @property
    def physfn(self) -> PciDevice | None:
        """The PF of a VF; None for anything else."""
        name = _link_name(self.path / "physfn")
        return PciDevice(name, self.sysfs, self.devfs) if name else None

    @property
    def vfio_dev_name(self) -> str | None:
        """``vfioN`` if the kernel created a device cdev for it (sysfs vfio-dev/)."""
        try:
            names = os.listdir(self.path / "vfio-dev")
        except OSError:
            return None
        names = [n for n in names if n.startswith("vfio")]
        return names[0] if names else None

    @property
    def cdev_path(self) -> Path | None:
        """The ``/dev/vfio/devices/vfioN`` node, only if it really exists."""
        name = self.vfio_dev_name
        if name is None:
            return None
        node = self.devfs / "vfio/devices" / name
        return node if node.exists() else None

    def config(self) -> bytes:
        """The config space sysfs lets this user read (64 bytes unprivileged, 256+ as root)."""
        return (self.path / "config").read_bytes()


#: drivers that leave an IOMMU group usable by vfio. The kernel's rule: a group's DMA can be
#: claimed when no member is bound to a driver that does DMA; vfio drivers, pci-stub and
#: pcieport (driver_managed_dma: how bridges are excepted) do not count. No driver is fine.
VFIO_FRIENDLY = {"vfio-pci", "pci-stub", "pcieport"}


def member_blocks_vfio(dev: PciDevice) -> bool:
    """True if ``dev``, as a member of an IOMMU group, keeps the group from vfio."""
    drv = dev.driver
    return not (drv is None or drv in VFIO_FRIENDLY or drv.startswith("vfio"))


def group_blockers(dev: PciDevice) -> list[PciDevice]:
    """The other members of ``dev``'s IOMMU group that keep it from vfio."""
    return [m for m in dev.group_members() if m.bdf != dev.bdf and member_blocks_vfio(m)]


def describe_members(devs: list[PciDevice]) -> str:
    return ", ".join(f"{m.bdf} ({m.driver or 'no driver'})" for m in devs)


def find_by_cdev(name: str, sysfs: Path = SYSFS, devfs: Path = DEVFS) -> PciDevice:
    link = sysfs / "class/vfio-dev" / name / "device"
    try:
        bdf = os.path.basename(os.readlink(link))
    except OSError:
        raise DeviceNotFound(f"no VFIO device cdev {name}", path=str(devfs / "vfio/devices" / name),
                             hint="`vfioctl list` shows the cdevs; bind a device with "
                                  "`vfioctl bind DEVICE`") from None
    return PciDevice(bdf, sysfs, devfs)


def resolve(spec: str, sysfs: Path | None = None, devfs: Path | None = None) -> PciDevice:
    """The PCI device a DEVICE argument names; it must exist (not necessarily be on vfio)."""
    sysfs = sysfs or SYSFS
    devfs = devfs or DEVFS
    m = _CDEV.match(spec.strip())
    if m:
        return find_by_cdev(m[1], sysfs, devfs)
    if spec.startswith("/"):
        raise UsageError(f"{spec!r} is not a VFIO device cdev path",
                         hint="use /dev/vfio/devices/vfioN, vfioN, or a PCI address")
    dev = PciDevice(parse_bdf(spec), sysfs, devfs)
    if not dev.exists():
        raise DeviceNotFound(f"no PCI device {dev.bdf}", path=str(dev.path),
                             hint="`vfioctl list` shows the PCI devices of this machine")
    return dev


def require_vfio_pci(dev: PciDevice) -> None:
    """NotBoundToVfio naming the fix unless ``dev`` is bound to vfio-pci."""
    drv = dev.driver
    if drv != "vfio-pci":
        now = f"bound to {drv}" if drv else "bound to no driver"
        raise NotBoundToVfio(f"{dev.bdf} is not bound to vfio-pci ({now})", path=str(dev.path),
                             hint=f"bind {dev.bdf} to vfio-pci first (vfioctl bind {dev.bdf})")


def require_cdev(dev: PciDevice) -> Path:
    """The cdev of a device bound to vfio-pci, or an error saying what to do."""
    require_vfio_pci(dev)
    name = dev.vfio_dev_name
    node = dev.devfs / "vfio/devices" / name if name else None
    if node is None or not node.exists():
        # say first whether this kernel can make device cdevs at all
        from . import kernel

        caps = kernel.kernel_caps(dev.sysfs, dev.devfs)
        reason = kernel.cdev_missing(caps)
        if reason is not None:
            raise EnvironmentProblem(
                f"{dev.bdf} cannot be opened through a device cdev: {reason}",
                path=str(dev.path), hint=kernel.cdev_missing_hint(caps))
    if name is None:
        raise EnvironmentProblem(
            f"{dev.bdf} is on vfio-pci but has no device cdev (no vfio-dev/ in sysfs)",
            path=str(dev.path),
            hint="the kernel needs CONFIG_VFIO_DEVICE_CDEV=y; `vfioctl doctor` checks this")
    if not node.exists():
        raise EnvironmentProblem(
            f"{dev.bdf} has cdev {name} in sysfs but {node} does not exist", path=str(node),
            hint="udev did not create the node: mount devtmpfs on /dev, or create it with "
                 f"`mknod {node} c $(tr : ' ' < {dev.path}/vfio-dev/{name}/dev)`")
    return node


# --- what the host uses a device for (bind's in-use checks) ---------------------------------------
@dataclass(frozen=True)
class NetInterface:
    name: str
    up: bool


@dataclass(frozen=True)
class BlockDevice:
    name: str
    majmin: str
    mountpoints: tuple[str, ...]
    holders: tuple[str, ...]
    swap: bool
    #: the kernel refuses an exclusive open (EBUSY): held, whatever holds it
    busy: bool = False


IFF_UP = 0x1


def net_interfaces(dev: PciDevice) -> list[NetInterface]:
    out = []
    try:
        names = sorted(os.listdir(dev.path / "net"))
    except OSError:
        return out
    for n in names:
        flags = _read(dev.sysfs / "class/net" / n / "flags") or "0"
        out.append(NetInterface(n, bool(int(flags, 16) & IFF_UP)))
    return out


def _mounts(proc: Path) -> dict[str, list[str]]:
    """Mount points by device number (``259:1``) and by source device name (``name:nvme0n1``):
    btrfs and other filesystems with anonymous device numbers are found by their source."""
    by_dev: dict[str, list[str]] = {}
    try:
        for line in (proc / "self/mountinfo").read_text().splitlines():
            f = line.split()
            by_dev.setdefault(f[2], []).append(f[4])
            if " - " in line:
                source = line.split(" - ", 1)[1].split()[1:2]
                if source and source[0].startswith("/dev/"):
                    by_dev.setdefault("name:" + os.path.basename(source[0]), []).append(f[4])
    except OSError:
        pass
    return by_dev


def exclusive_busy(node: Path) -> bool:
    """True if the kernel refuses an exclusive open of the block device node (EBUSY): something
    holds it, whatever it is (a mount of any filesystem, LVM/md/dm, swap, a program with
    O_EXCL). A node that is absent or not ours to open says nothing (False)."""
    try:
        fd = os.open(node, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return exc.errno == errno.EBUSY
    os.close(fd)
    return False


def holder_names(cls: Path, holders: tuple[str, ...]) -> tuple[str, ...]:
    """``dm-0 (vg0-data)``: a holder with its device-mapper or md name where it has one."""
    out = []
    for h in holders:
        name = _read(cls / h / "dm/name")
        out.append(f"{h} ({name})" if name else h)
    return tuple(out)


def _swaps(proc: Path) -> set[str]:
    try:
        lines = (proc / "swaps").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {os.path.basename(line.split()[0]) for line in lines if line.strip()}


def block_devices(dev: PciDevice, proc: Path = Path("/proc")) -> list[BlockDevice]:
    """Block devices (disks and partitions) below the PCI device in sysfs, with their users."""
    base = str(dev.path.resolve())
    cls = dev.sysfs / "class/block"
    try:
        names = sorted(os.listdir(cls))
    except OSError:
        return []
    mounts, swaps = _mounts(proc), _swaps(proc)
    # NVMe native multipath (Debian's kernels): the disk users see, nvme0n1, is a virtual head
    # under nvme-subsystem; it is the controller's if one of its paths (multipath/nvme0c0n1)
    # lives under the PCI device. Its partitions sit below the head.
    # The link is the kernel's naming (drivers/nvme/host/multipath.c): the controller's path
    # nvme<subsys>c<ctrl>n<ns> serves the head nvme<subsys>n<ns>; newer kernels also list the
    # paths in the head's multipath/ directory.
    heads = set()
    for n in names:
        m = re.fullmatch(r"nvme(\d+)c\d+n(\d+)", n)
        if m and os.path.realpath(cls / n).startswith(base + "/"):
            heads.add(os.path.realpath(cls / f"nvme{m[1]}n{m[2]}"))
        try:
            paths = os.listdir(cls / n / "multipath")
        except OSError:
            continue
        if any(os.path.realpath(cls / n / "multipath" / p).startswith(base + "/") for p in paths):
            heads.add(os.path.realpath(cls / n))
    out = []
    for n in names:
        real = os.path.realpath(cls / n)
        if not (real.startswith(base + "/") or real in heads
                or os.path.dirname(real) in heads):
            continue
        majmin = _read(cls / n / "dev") or ""
        try:
            holders = holder_names(cls, tuple(sorted(os.listdir(cls / n / "holders"))))
        except OSError:
            holders = ()
        where = tuple(dict.fromkeys(mounts.get(majmin, []) + mounts.get("name:" + n, [])))
        out.append(BlockDevice(n, majmin, where, holders, n in swaps,
                               exclusive_busy(dev.devfs / n)))
    return out
