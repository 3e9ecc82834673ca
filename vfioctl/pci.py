"""A PCI device as sysfs shows it, and the DEVICE argument every command takes.

DEVICE is a BDF in full or short form (``0000:01:00.0``, ``01:00.0``), a cdev name (``vfio0``)
or a cdev path (``/dev/vfio/devices/vfio0``). Reads only; binding.py writes.
"""
from __future__ import annotations

import errno
import functools
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


@functools.lru_cache(maxsize=256)  # pure; a session open parses its DEVICE each time
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


def _read(path: str | Path) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _link_name(path: str | Path) -> str | None:
    try:
        return os.readlink(path).rpartition("/")[2]  # its basename
    except OSError:
        return None


def _device_dir(sysfs, bdf: str) -> str:
    """A PCI function's sysfs directory as a string."""
    return f"{sysfs}/bus/pci/devices/{bdf}"


class _once:
    """A property computed on first use and kept in the instance (functools.cached_property
    without the lock it takes on Python 3.11: a session open makes a PciDevice each time)."""

    def __init__(self, fn):
        self.fn, self.name, self.__doc__ = fn, fn.__name__, fn.__doc__

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


@dataclass(frozen=True, init=False)
class PciDevice:
    """One PCI function, read from sysfs when asked (properties are live)."""

    bdf: str
    sysfs: Path = SYSFS
    devfs: Path = DEVFS

    def __init__(self, bdf: str, sysfs: Path = SYSFS, devfs: Path = DEVFS):
        # frozen: the fields go into the instance dict directly, as _once does; the generated
        # __init__'s object.__setattr__ calls cost 3000 instructions more (a session open
        # makes one of these)
        d = self.__dict__
        d["bdf"], d["sysfs"], d["devfs"] = bdf, sysfs, devfs
        # sysfs_dir and devfs_dir made here (a descriptor call each saved on a session open);
        # a subclass whose own dataclass __init__ replaces this one gets them on first use
        d["sysfs_dir"] = _device_dir(sysfs, bdf)
        d["devfs_dir"] = str(devfs)

    @_once
    def sysfs_dir(self) -> str:
        """``path`` as a string, made once: the live properties join attribute names to it
        (a session open reads several, and a pathlib join costs more than the syscall)."""
        return _device_dir(self.sysfs, self.bdf)

    @_once
    def devfs_dir(self) -> str:
        return str(self.devfs)

    @_once
    def path(self) -> Path:
        """The device's sysfs directory."""
        return self.sysfs / "bus/pci/devices" / self.bdf

    def exists(self) -> bool:
        return os.path.exists(self.sysfs_dir)

    def _hex(self, name: str) -> int:
        v = _read(f"{self.sysfs_dir}/{name}")
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
        return _link_name(f"{self.sysfs_dir}/driver")

    @property
    def driver_override(self) -> str | None:
        v = _read(f"{self.sysfs_dir}/driver_override")
        return None if v in (None, "", "(null)") else v

    @property
    def iommu_group(self) -> int | None:
        g = _link_name(f"{self.sysfs_dir}/iommu_group")
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
        v = _read(f"{self.sysfs_dir}/sriov_totalvfs")
        return int(v) if v else None

    @property
    def sriov_numvfs(self) -> int | None:
        v = _read(f"{self.sysfs_dir}/sriov_numvfs")
        return int(v) if v else None

    def virtfns(self) -> list[PciDevice]:
        """The PF's VFs now, in VF order (sysfs virtfnN links)."""
        out = []
        n = 0
        while True:
            name = _link_name(f"{self.sysfs_dir}/virtfn{n}")
            if name is None:
                return out
            out.append(PciDevice(name, self.sysfs, self.devfs))
            n += 1

    @property
    def physfn(self) -> PciDevice | None:
        """The PF of a VF; None for anything else."""
        name = _link_name(f"{self.sysfs_dir}/physfn")
        return PciDevice(name, self.sysfs, self.devfs) if name else None

    @property
    def vfio_dev_name(self) -> str | None:
        """``vfioN`` if the kernel created a device cdev for it (sysfs vfio-dev/)."""
        try:
            names = os.listdir(f"{self.sysfs_dir}/vfio-dev")
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


def resolve_bound(spec: str, sysfs: Path | None = None, devfs: Path | None = None) -> PciDevice:
    """``resolve`` then ``require_vfio_pci``: the device DEVICE names, bound to vfio-pci. For a
    PCI address one sysfs read (the driver link) settles both when the answer is yes; the
    errors are resolve's and require_vfio_pci's."""
    text = spec.strip()
    if not text.startswith(("/", "vfio")):  # not a cdev (_CDEV) nor a path: a PCI address
        dev = PciDevice(parse_bdf(spec), sysfs or SYSFS, devfs or DEVFS)
        if dev.driver == "vfio-pci":
            return dev
    dev = resolve(spec, sysfs, devfs)
    require_vfio_pci(dev)
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
    #: IPv4 and non-link-local IPv6 addresses it carries
    addresses: tuple[str, ...] = ()
    #: routes through it ("default", "10.0.0.0/24", "2001:db8::/64"), link-local ones left out
    routes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BlockDevice:
    name: str
    majmin: str
    mountpoints: tuple[str, ...]
    holders: tuple[str, ...]
    swap: bool
    #: the kernel refuses an exclusive open (EBUSY): held, whatever holds it
    busy: bool = False
    #: mount points of what is stacked on it (dm/md/LVM volumes, and theirs in turn)
    stacked_mounts: tuple[str, ...] = ()


IFF_UP = 0x1


def net_interfaces(dev: PciDevice, proc: Path = Path("/proc")) -> list[NetInterface]:
    out = []
    try:
        names = sorted(os.listdir(dev.path / "net"))
    except OSError:
        return out
    routes = _routes(proc)
    for n in names:
        flags = _read(dev.sysfs / "class/net" / n / "flags") or "0"
        out.append(NetInterface(n, bool(int(flags, 16) & IFF_UP),
                                tuple(_ipv4_address(n) + _ipv6_addresses(proc, n)),
                                tuple(routes.get(n, ()))))
    return out


SIOCGIFADDR = 0x8915


def _ipv4_address(name: str) -> list[str]:
    """The interface's (primary) IPv4 address, if it has one."""
    import fcntl
    import socket
    import struct

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            res = fcntl.ioctl(sock.fileno(), SIOCGIFADDR,
                              struct.pack("16s16x", name.encode()[:15]))
    except OSError:  # EADDRNOTAVAIL: none; or no IPv4 in this kernel
        return []
    return [socket.inet_ntoa(res[20:24])]


def _ipv6_addresses(proc: Path, name: str) -> list[str]:
    import ipaddress

    out = []
    try:
        lines = (proc / "net/if_inet6").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        f = line.split()
        if len(f) == 6 and f[5] == name and int(f[3], 16) != 0x20:  # 0x20: link-local scope
            out.append(f"{ipaddress.IPv6Address(bytes.fromhex(f[0]))}/{int(f[2], 16)}")
    return out


def _routes(proc: Path) -> dict[str, list[str]]:
    """Routes by interface, from /proc/net/route and /proc/net/ipv6_route (as dpdk-devbind, an
    interface with a route is one the host uses)."""
    import ipaddress
    import socket
    import struct

    out: dict[str, list[str]] = {}
    try:
        for line in (proc / "net/route").read_text().splitlines()[1:]:
            f = line.split()
            if len(f) >= 8:
                dest, mask = int(f[1], 16), int(f[7], 16)
                plen = bin(mask).count("1")
                text = "default" if plen == 0 else \
                    f"{socket.inet_ntoa(struct.pack('<I', dest))}/{plen}"
                out.setdefault(f[0], []).append(text)
    except OSError:
        pass
    try:
        for line in (proc / "net/ipv6_route").read_text().splitlines():
            f = line.split()
            if len(f) != 10:
                continue
            dest = ipaddress.IPv6Address(bytes.fromhex(f[0]))
            if dest.is_link_local or dest.is_multicast or f[9] == "lo":
                continue
            plen = int(f[1], 16)
            if plen == 128:  # the host's own addresses (local table)
                continue
            out.setdefault(f[9], []).append("default (IPv6)" if plen == 0 else f"{dest}/{plen}")
    except OSError:
        pass
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


def stacked_mounts(cls: Path, name: str, mounts: dict[str, list[str]],
                   seen: set[str] | None = None) -> tuple[str, ...]:
    """Mount points of every block device stacked on ``name`` (its holders, recursively: an
    LVM volume on a dm-crypt on a partition), and of their swap or mounts by name."""
    seen = set() if seen is None else seen
    out: list[str] = []
    try:
        holders = sorted(os.listdir(cls / name / "holders"))
    except OSError:
        return ()
    for h in holders:
        if h in seen:
            continue
        seen.add(h)
        majmin = _read(cls / h / "dev") or ""
        out += mounts.get(majmin, []) + mounts.get("name:" + h, [])
        dm = _read(cls / h / "dm/name")
        if dm:
            out += mounts.get("name:" + dm, [])  # /dev/mapper/NAME in mountinfo
        out += stacked_mounts(cls, h, mounts, seen)
    return tuple(dict.fromkeys(out))


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
                               exclusive_busy(dev.devfs / n), stacked_mounts(cls, n, mounts)))
    return out


def _process_fds(proc: Path):
    """(pid, [(fd, link target), ...]) of each process whose fds this user may look at."""
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return
    for pid in pids:
        fddir = proc / pid / "fd"
        try:
            fds = os.listdir(fddir)
        except OSError:
            continue
        links = []
        for fd in fds:
            try:
                links.append((fd, os.readlink(fddir / fd)))
            except OSError:
                continue
        yield pid, links


def _who(proc: Path, pid: str) -> str:
    return f"{_read(proc / pid / 'comm') or '?'} (pid {pid})"


def node_users(nodes, proc: Path = Path("/proc")) -> list[str]:
    """``comm (pid N)`` of each process that has one of the device ``nodes`` open (what `fuser`
    shows; this process too); processes not ours to look into are not seen."""
    targets = {str(n) for n in nodes}
    return [_who(proc, pid) for pid, links in _process_fds(proc)
            if any(link in targets for _fd, link in links)]


def vfio_device_users(dev: PciDevice, proc: Path = Path("/proc")) -> list[str]:
    """``comm (pid N)`` of each process that has ``dev`` open through VFIO (this one too):
    its cdev node, or a device fd from its group. A device fd is an anonymous inode; Linux 6.18
    and newer name its device in fdinfo (``vfio-device-syspath``), older kernels do not, and
    there a device fd in a process that also has the device's group open counts. A group fd
    alone does not hold the device (unbinding it does not wait for one)."""
    cdev = str(dev.cdev_path) if dev.cdev_path is not None else None
    group = f"{dev.devfs}/vfio/{dev.iommu_group}" if dev.iommu_group is not None else None
    out = []
    for pid, links in _process_fds(proc):
        targets = {link for _fd, link in links}
        holds = cdev is not None and cdev in targets
        has_group = group in targets
        for fd, link in links if not holds else ():
            if link != "anon_inode:[vfio-device]":
                continue
            info = _read(proc / pid / "fdinfo" / fd) or ""
            syspath = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                            if ln.startswith("vfio-device-syspath:")), None)
            holds = os.path.basename(syspath) == dev.bdf if syspath is not None else has_group
            if holds:
                break
        if holds:
            out.append(_who(proc, pid))
    return out


def drm_nodes(dev: PciDevice) -> list[str]:
    """The DRM nodes a GPU driver made for the device (card0, renderD128)."""
    try:
        return sorted(os.listdir(dev.path / "drm"))
    except OSError:
        return []


def framebuffers(dev: PciDevice) -> list[str]:
    """The framebuffers registered on the device (fb0: where the console may be)."""
    try:
        return sorted(n for n in os.listdir(dev.path / "graphics") if n.startswith("fb"))
    except OSError:
        return []


def is_boot_vga(dev: PciDevice) -> bool:
    return _read(dev.path / "boot_vga") == "1"


_USB_DEVICE = re.compile(r"\d+-[\d.]+")


def usb_devices(dev: PciDevice) -> list[str]:
    """``1-1 (QEMU USB Keyboard)``: the USB devices attached below a host controller's root
    hubs (hubs' children too)."""
    out = []

    def walk(d: Path) -> None:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            return
        for n in names:
            if _USB_DEVICE.fullmatch(n) and (d / n).is_dir():
                product = _read(d / n / "product")
                out.append(f"{n} ({product})" if product else n)
                walk(d / n)

    try:
        hubs = sorted(n for n in os.listdir(dev.path) if re.fullmatch(r"usb\d+", n))
    except OSError:
        return out
    for hub in hubs:
        walk(dev.path / hub)
    return out
