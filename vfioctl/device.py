"""A VFIO device cdev (``/dev/vfio/devices/vfioN``) and its regions."""
from __future__ import annotations

import ctypes
import errno
import mmap as _mmap
import os
from dataclasses import dataclass, field

from . import uapi
from .errors import EnvironmentProblem, KernelError, RegionAccessError, UsageError
from .fd import FdOwner, open_node
from .ioctl import ioctl, try_ioctl
from .iova import parse_caps
from .speedups import compiled
from .irq import IRQ_NAMES, IrqSet

REGION_NAMES = ("bar0", "bar1", "bar2", "bar3", "bar4", "bar5", "rom", "config", "vga")
WIDTHS = (1, 2, 4, 8)
PCI_COMMAND = 0x04
PCI_COMMAND_MASTER = 0x4
PCI_COMMAND_MEMORY = 0x2

_DEVICE_FLAGS = {
    uapi.VFIO_DEVICE_FLAGS_RESET: "RESET",
    uapi.VFIO_DEVICE_FLAGS_PCI: "PCI",
    uapi.VFIO_DEVICE_FLAGS_PLATFORM: "PLATFORM",
    uapi.VFIO_DEVICE_FLAGS_AMBA: "AMBA",
    uapi.VFIO_DEVICE_FLAGS_CCW: "CCW",
    uapi.VFIO_DEVICE_FLAGS_AP: "AP",
    uapi.VFIO_DEVICE_FLAGS_FSL_MC: "FSL_MC",
    uapi.VFIO_DEVICE_FLAGS_CAPS: "CAPS",
    uapi.VFIO_DEVICE_FLAGS_CDX: "CDX",
}
_REGION_FLAGS = {
    uapi.VFIO_REGION_INFO_FLAG_READ: "READ",
    uapi.VFIO_REGION_INFO_FLAG_WRITE: "WRITE",
    uapi.VFIO_REGION_INFO_FLAG_MMAP: "MMAP",
    uapi.VFIO_REGION_INFO_FLAG_CAPS: "CAPS",
}
_IRQ_FLAGS = {
    uapi.VFIO_IRQ_INFO_EVENTFD: "EVENTFD",
    uapi.VFIO_IRQ_INFO_MASKABLE: "MASKABLE",
    uapi.VFIO_IRQ_INFO_AUTOMASKED: "AUTOMASKED",
    uapi.VFIO_IRQ_INFO_NORESIZE: "NORESIZE",
}


def flag_names(value: int, table: dict[int, str]) -> tuple[str, ...]:
    return tuple(name for bit, name in table.items() if value & bit)


U32_MAX = 0xFFFFFFFF


def check_u32(value: int, what: str) -> int:
    """``value`` if it fits the kernel's __u32 field, else a UsageError: ctypes would silently
    truncate it (a region index 0x100000000 would become 0)."""
    if not 0 <= value <= U32_MAX:
        raise UsageError(f"{what} {value:#x} is out of range", hint=f"{what} is 0..{U32_MAX:#x}")
    return value


def region_index(name: str | int) -> int:
    """``config``, ``bar0``…``bar5``, ``rom``, ``vga`` or an index → the region index."""
    if isinstance(name, int):
        return check_u32(name, "region index")
    key = str(name).strip().lower()
    if key in REGION_NAMES:
        return REGION_NAMES.index(key)
    try:
        idx = int(key, 0)
    except ValueError:
        raise UsageError(f"unknown region {name!r}",
                         hint="use config, bar0..bar5, rom, vga or a region index") from None
    return check_u32(idx, "region index")


def uuid_bytes(text: str) -> bytes:
    """The 16 bytes of a UUID string, as VFIO_DEVICE_FEATURE_PCI_VF_TOKEN takes them."""
    import uuid

    try:
        return uuid.UUID(str(text)).bytes
    except ValueError:
        raise UsageError(f"{text!r} is not a UUID",
                         hint="use the form 01234567-89ab-cdef-0123-456789abcdef") from None


def region_name(index: int) -> str:
    return REGION_NAMES[index] if index < len(REGION_NAMES) else f"region{index}"


# --- public dataclasses --------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceInfo:
    flags: int
    num_regions: int
    num_irqs: int

    @property
    def flag_names(self) -> tuple[str, ...]:
        return flag_names(self.flags, _DEVICE_FLAGS)

    @property
    def resettable(self) -> bool:
        return bool(self.flags & uapi.VFIO_DEVICE_FLAGS_RESET)


@dataclass(frozen=True)
class SparseArea:
    offset: int
    size: int


@dataclass(frozen=True)
class RegionInfo:
    index: int
    flags: int
    size: int
    offset: int
    sparse_areas: tuple[SparseArea, ...] | None = None
    type: tuple[int, int] | None = None  # (type, subtype)
    msix_mappable: bool = False
    cap_ids: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return region_name(self.index)

    @property
    def flag_names(self) -> tuple[str, ...]:
        return flag_names(self.flags, _REGION_FLAGS)

    @property
    def readable(self) -> bool:
        return bool(self.flags & uapi.VFIO_REGION_INFO_FLAG_READ)

    @property
    def writable(self) -> bool:
        return bool(self.flags & uapi.VFIO_REGION_INFO_FLAG_WRITE)

    @property
    def mappable(self) -> bool:
        return bool(self.flags & uapi.VFIO_REGION_INFO_FLAG_MMAP)

    def mmap_areas(self) -> tuple[SparseArea, ...]:
        """What may be mmapped: the sparse areas if the kernel listed them, else the whole."""
        if not self.mappable:
            return ()
        if self.sparse_areas is not None:
            return self.sparse_areas
        return (SparseArea(0, self.size),)


@dataclass(frozen=True)
class IrqInfo:
    index: int
    flags: int
    count: int

    @property
    def name(self) -> str:
        return IRQ_NAMES[self.index] if self.index < len(IRQ_NAMES) else f"irq{self.index}"

    @property
    def flag_names(self) -> tuple[str, ...]:
        return flag_names(self.flags, _IRQ_FLAGS)


@dataclass(frozen=True)
class HotResetDevice:
    segment: int
    bus: int
    devfn: int
    devid: int  # or group_id, by the flags of the answer

    @property
    def bdf(self) -> str:
        return f"{self.segment:04x}:{self.bus:02x}:{self.devfn >> 3:02x}.{self.devfn & 7}"


@dataclass(frozen=True)
class HotResetInfo:
    flags: int
    devices: tuple[HotResetDevice, ...] = field(default_factory=tuple)

    @property
    def uses_devid(self) -> bool:
        return bool(self.flags & uapi.VFIO_PCI_HOT_RESET_FLAG_DEV_ID)

    @property
    def all_owned(self) -> bool:
        return bool(self.flags & uapi.VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED)


# --- the device ----------------------------------------------------------------------------------
class Device(FdOwner):
    """An open VFIO device: its cdev (nothing but BIND works until ``bind(iommufd)``), or an fd
    the group gave (``Device.adopt``), ready at once."""

    def __init__(self, path: str, *, bdf: str | None = None, fd: int | None = None):
        if fd is None:
            fd = open_node(path, "the VFIO device", missing_hint=(
                "bind the device to vfio-pci first; then the kernel makes its cdev"))
        FdOwner.__init__(self, fd, path)  # not super(), whose object a session open pays for
        self.bdf = bdf
        self.devid: int | None = None
        self.attached_pt: int | None = None
        self._regions: list[Region] = []
        self._irqs: list = []  # IrqSets (vfioctl.irq), released before the regions
        self._config: Region | None = None

    @classmethod
    def adopt(cls, fd: int, *, path: str, bdf: str | None = None) -> Device:
        """Own ``fd``, a device fd from VFIO_GROUP_GET_DEVICE_FD (``path`` names it in errors)."""
        return cls(path, bdf=bdf, fd=fd)

    # --- iommufd --------------------------------------------------------------------------------
    def bind(self, iommufd, *, vf_token: str | None = None) -> int:
        """VFIO_DEVICE_BIND_IOMMUFD against an IommuFD (or a raw fd); returns the devid.

        ``vf_token`` (a UUID) goes with VFIO_DEVICE_BIND_FLAG_TOKEN, which 7.x kernels know; on a
        kernel without it (EINVAL, confirmed by trying the flag alone) the error says so."""
        fd = iommufd if isinstance(iommufd, int) else iommufd.fileno()
        arg = uapi.vfio_device_bind_iommufd(iommufd=fd)
        token = None
        if vf_token is not None:
            token = ctypes.create_string_buffer(uuid_bytes(vf_token), 16)
            arg.flags = uapi.VFIO_DEVICE_BIND_FLAG_TOKEN
            arg.token_uuid_ptr = ctypes.addressof(token)
        try:
            self._ioctl(uapi.VFIO_DEVICE_BIND_IOMMUFD, arg, "VFIO_DEVICE_BIND_IOMMUFD")
        except KernelError as exc:
            if token is not None and exc.errno == errno.EINVAL and not self._knows_token_flag(fd):
                raise EnvironmentProblem(
                    "this kernel's VFIO_DEVICE_BIND_IOMMUFD takes no VF token (no "
                    "VFIO_DEVICE_BIND_FLAG_TOKEN: Linux 7.x has it, 6.12 has not)",
                    errno=exc.errno, op=exc.op, path=self.path,
                    hint="open it through its group and a container, where the token goes "
                         "with the device name", fix="group-path") from None
            raise
        self.devid = arg.out_devid
        return self.devid

    def _knows_token_flag(self, iommufd: int) -> bool:
        """Whether the kernel reads a token with VFIO_DEVICE_BIND_FLAG_TOKEN, found by trying:
        a NULL token pointer is EFAULT where the flag is known, EINVAL where it is not (the
        bind fails either way; the fd stays unbound)."""
        arg = uapi.vfio_device_bind_iommufd(iommufd=iommufd,
                                            flags=uapi.VFIO_DEVICE_BIND_FLAG_TOKEN)
        return try_ioctl(self.fileno(), uapi.VFIO_DEVICE_BIND_IOMMUFD, arg) == -errno.EFAULT
    def attach(self, pt_id) -> int:
        """VFIO_DEVICE_ATTACH_IOMMUFD_PT to an IOAS (object or id) or HWPT id."""
        pid = pt_id if isinstance(pt_id, int) else pt_id.id
        arg = uapi.vfio_device_attach_iommufd_pt(pt_id=pid)
        self._ioctl(uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT, arg, "VFIO_DEVICE_ATTACH_IOMMUFD_PT")
        self.attached_pt = arg.pt_id
        return arg.pt_id

    def detach(self) -> None:
        arg = uapi.vfio_device_detach_iommufd_pt()
        self._ioctl(uapi.VFIO_DEVICE_DETACH_IOMMUFD_PT, arg, "VFIO_DEVICE_DETACH_IOMMUFD_PT")
        self.attached_pt = None

    # --- info -----------------------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        arg = uapi.vfio_device_info()
        self._ioctl(uapi.VFIO_DEVICE_GET_INFO, arg, "VFIO_DEVICE_GET_INFO")
        return DeviceInfo(arg.flags, arg.num_regions, arg.num_irqs)

    def region_info(self, index: int | str) -> RegionInfo:
        idx = region_index(index)
        arg = uapi.vfio_region_info(index=idx)
        self._ioctl(uapi.VFIO_DEVICE_GET_REGION_INFO, arg, f"VFIO_DEVICE_GET_REGION_INFO({idx})")
        if not (arg.flags & uapi.VFIO_REGION_INFO_FLAG_CAPS) or arg.argsz <= ctypes.sizeof(arg):
            return RegionInfo(idx, arg.flags, arg.size, arg.offset)
        # the capability chain: ask again with room for argsz bytes
        buf = bytearray(arg.argsz)
        head = uapi.vfio_region_info(argsz=arg.argsz, index=idx)
        buf[: ctypes.sizeof(head)] = bytes(head)
        self._ioctl(uapi.VFIO_DEVICE_GET_REGION_INFO, buf, f"VFIO_DEVICE_GET_REGION_INFO({idx})")
        arg = uapi.vfio_region_info.from_buffer_copy(buf)
        sparse, rtype, msix, ids = None, None, False, []
        for cap_id, _version, off in parse_caps(bytes(buf), arg.cap_offset):
            ids.append(cap_id)
            if cap_id == uapi.VFIO_REGION_INFO_CAP_SPARSE_MMAP:
                cap = uapi.vfio_region_info_cap_sparse_mmap.from_buffer_copy(buf, off)
                base = off + ctypes.sizeof(cap)
                area_t = uapi.vfio_region_sparse_mmap_area
                if base + cap.nr_areas * ctypes.sizeof(area_t) > len(buf):
                    raise KernelError(f"VFIO_DEVICE_GET_REGION_INFO({idx}) (sparse mmap "
                                      "capability truncated)", errno.EIO, self.path)
                sparse = tuple(
                    SparseArea(a.offset, a.size)
                    for a in (area_t.from_buffer_copy(buf, base + i * ctypes.sizeof(area_t))
                              for i in range(cap.nr_areas)))
            elif cap_id == uapi.VFIO_REGION_INFO_CAP_TYPE:
                cap = uapi.vfio_region_info_cap_type.from_buffer_copy(buf, off)
                rtype = (cap.type, cap.subtype)
            elif cap_id == uapi.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE:
                msix = True
        return RegionInfo(idx, arg.flags, arg.size, arg.offset, sparse, rtype, msix, tuple(ids))

    def regions(self) -> list[RegionInfo]:
        """Every region the device has; indexes the kernel rejects (a non-VGA device's VGA
        region answers EINVAL) and zero-sized ones (unimplemented BARs) are left out."""
        return [r for r in self._each(self.region_info, self.info().num_regions) if r.size]

    def irq_info(self, index: int) -> IrqInfo:
        arg = uapi.vfio_irq_info(index=check_u32(index, "IRQ index"))
        self._ioctl(uapi.VFIO_DEVICE_GET_IRQ_INFO, arg, f"VFIO_DEVICE_GET_IRQ_INFO({index})")
        return IrqInfo(arg.index, arg.flags, arg.count)

    def irqs(self) -> list[IrqInfo]:
        """Every IRQ index the device has; those the kernel rejects (ERR on a conventional PCI
        device answers EINVAL) are left out."""
        return list(self._each(self.irq_info, self.info().num_irqs))

    @staticmethod
    def _each(get, count: int):
        for idx in range(count):
            try:
                yield get(idx)
            except KernelError as exc:
                if exc.errno != errno.EINVAL:
                    raise

    # --- reset ----------------------------------------------------------------------------------
    def reset(self) -> None:
        self._ioctl(uapi.VFIO_DEVICE_RESET, 0, "VFIO_DEVICE_RESET")

    def hot_reset_info(self) -> HotResetInfo:
        arg = uapi.vfio_pci_hot_reset_info()
        op = "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO"
        try:
            self._ioctl(uapi.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, arg, op)
        except KernelError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        dev_t = uapi.vfio_pci_dependent_device
        size = ctypes.sizeof(arg) + arg.count * ctypes.sizeof(dev_t)
        buf = bytearray(size)
        buf[: ctypes.sizeof(arg)] = bytes(uapi.vfio_pci_hot_reset_info(argsz=size))
        self._ioctl(uapi.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf, op)
        head = uapi.vfio_pci_hot_reset_info.from_buffer_copy(buf)
        devs = tuple(
            HotResetDevice(d.segment, d.bus, d.devfn, d.devid)
            for d in (dev_t.from_buffer_copy(buf, ctypes.sizeof(head) + i * ctypes.sizeof(dev_t))
                      for i in range(head.count)))
        return HotResetInfo(head.flags, devs)

    def hot_reset(self, group_fds=()) -> None:
        """VFIO_DEVICE_PCI_HOT_RESET: with no group fds (the iommufd form: the devices bound to
        this device's iommufd prove ownership), or with the fds of every affected group (the
        group path)."""
        fds = list(group_fds)
        head = uapi.vfio_pci_hot_reset(count=len(fds))
        head.argsz = ctypes.sizeof(head) + 4 * len(fds)
        buf = bytearray(bytes(head) + b"".join(fd.to_bytes(4, "little", signed=True)
                                               for fd in fds))
        self._ioctl(uapi.VFIO_DEVICE_PCI_HOT_RESET, buf, "VFIO_DEVICE_PCI_HOT_RESET")

    # --- features and irqs (raw) ----------------------------------------------------------------
    def feature(self, flags: int, data: bytes = b"") -> bytes:
        """VFIO_DEVICE_FEATURE with ``flags`` (feature index | GET/SET/PROBE) and payload."""
        head = uapi.vfio_device_feature(flags=flags)
        size = ctypes.sizeof(head) + len(data)
        head.argsz = size
        buf = bytearray(bytes(head) + data)
        self._ioctl(uapi.VFIO_DEVICE_FEATURE, buf, "VFIO_DEVICE_FEATURE")
        return bytes(buf[ctypes.sizeof(head):])

    def set_vf_token(self, token: str) -> None:
        """VFIO_DEVICE_FEATURE_PCI_VF_TOKEN: set the VF token of this PF (on vfio-pci) that its
        VFs must then be opened with. The kernel never gives a token back (no GET)."""
        try:
            self.feature(uapi.VFIO_DEVICE_FEATURE_SET | uapi.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN,
                         uuid_bytes(token))
        except KernelError as exc:
            if exc.errno == errno.ENOTTY:
                exc.hint = ("only an SR-IOV PF on vfio-pci has a VF token (vfio-pci keeps none "
                            "for other devices)")
            raise

    def set_irqs(self, index: int, flags: int, start: int = 0, count: int = 0,
                 data: bytes = b"") -> None:
        head = uapi.vfio_irq_set(flags=check_u32(flags, "IRQ flags"),
                                 index=check_u32(index, "IRQ index"),
                                 start=check_u32(start, "IRQ start"),
                                 count=check_u32(count, "IRQ count"))
        head.argsz = ctypes.sizeof(head) + len(data)
        buf = bytearray(bytes(head) + data)
        self._ioctl(uapi.VFIO_DEVICE_SET_IRQS, buf, f"VFIO_DEVICE_SET_IRQS({IRQ_NAMES[index] if index < 5 else index})")

    # --- regions --------------------------------------------------------------------------------
    def region(self, name: str | int) -> Region:
        """The region (one Region object per index, for the life of the device)."""
        idx = region_index(name)
        for reg in self._regions:
            if reg.info.index == idx:
                return reg
        try:
            info = self.region_info(idx)
        except KernelError as exc:
            if exc.errno == errno.EINVAL:
                raise RegionAccessError(
                    f"{self.path} has no region {region_name(idx)} (index {idx})",
                    errno=exc.errno, op=exc.op, path=self.path,
                    hint="`vfioctl info DEVICE` lists the regions") from None
            raise
        if info.size == 0:
            raise RegionAccessError(f"region {info.name} of {self.path} is not implemented "
                                    "(size 0)", path=self.path,
                                    hint="`vfioctl info DEVICE` lists the regions")
        reg = Region(self, info)
        self._regions.append(reg)
        return reg

    # --- interrupts and bus mastering -----------------------------------------------------------
    def enable_irq(self, index: int | str, count: int = 1):
        """Wire ``count`` vectors of IRQ ``index`` (intx, msi, msix or a number) to eventfds."""

        return IrqSet(self, index, count)

    @property
    def config(self) -> Region:
        if self._config is None:
            self._config = self.region("config")
        return self._config

    def bus_master(self, enable: bool = True) -> bool:
        """Set or clear the PCI command register's bus-master bit; returns the previous state.

        Devices need it for DMA, and for MSI/MSI-X (a memory write); vfio-pci leaves it clear.
        """
        cmd = self.config.read(PCI_COMMAND, 2)
        new = (cmd | PCI_COMMAND_MASTER) if enable else (cmd & ~PCI_COMMAND_MASTER)
        if new != cmd:
            self.config.write(PCI_COMMAND, new, 2)
        return bool(cmd & PCI_COMMAND_MASTER)

    def _teardown(self) -> None:
        if self._irqs:
            for irq in reversed(list(self._irqs)):
                try:
                    irq.close()
                except KernelError:
                    pass  # the fd closing releases them anyway
        if self._regions:
            for reg in reversed(self._regions):
                reg.close()
            self._regions.clear()
        self._config = None

    def _ioctl(self, request: int, arg, op: str) -> None:
        ioctl(self._fd, request, arg, op=op, path=self.path)  # closed (-1): the seam says so


# --- regions -------------------------------------------------------------------------------------
_CTYPES = {1: ctypes.c_uint8, 2: ctypes.c_uint16, 4: ctypes.c_uint32, 8: ctypes.c_uint64}


def check_access(info: RegionInfo, offset: int, length: int, width: int | None = None) -> None:
    """Bounds and alignment of an access to a region; raises RegionAccessError naming the fix."""
    if width is not None and width not in WIDTHS:
        raise RegionAccessError(f"width {width} is not one of 1, 2, 4, 8",
                                hint="use a width of 1, 2, 4 or 8 bytes", fix="width")
    if offset < 0 or length <= 0:
        raise RegionAccessError(f"offset {offset:#x} / length {length} is not valid",
                                hint="use a non-negative offset and a positive length")
    if offset + length > info.size:
        raise RegionAccessError(
            f"offset {offset:#x}+{length:#x} is past the end of region {info.name} "
            f"(size {info.size:#x})",
            hint=f"use an offset below {info.size:#x}")
    if width is not None and offset % width:
        raise RegionAccessError(f"offset {offset:#x} is not aligned to width {width}",
                                hint=f"use an offset that is a multiple of {width}")


#: looked up once (module globals are cheaper than os.pread / int.from_bytes per access)
_os_pread = os.pread
_os_pwrite = os.pwrite
_from_bytes = int.from_bytes


def value_error(value, width: int) -> RegionAccessError:
    if not isinstance(value, int):
        return RegionAccessError(f"value {value!r} is not an integer",
                                 hint="pass an integer value")
    return RegionAccessError(f"value {value:#x} does not fit in {width} bytes",
                             hint=f"use a value from 0 to {(1 << (8 * width)) - 1:#x}")


def writable_bytes(buf) -> memoryview:
    """A writable, contiguous byte view of ``buf`` (readinto's destination), or UsageError."""
    try:
        view = memoryview(buf)
    except TypeError:
        raise UsageError(f"cannot read into a {type(buf).__name__}: it has no buffer",
                         hint="pass a bytearray, memoryview or mmap") from None
    if view.readonly or not view.c_contiguous:
        raise UsageError(f"cannot read into a {'read-only' if view.readonly else 'non-contiguous'}"
                         f" {type(buf).__name__}", hint="pass a writable contiguous buffer "
                                                        "(bytearray, memoryview, mmap)")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


class Region(compiled.Registers if compiled else object):
    """A region of a bound device: width-exact pread/pwrite at the region's offset, and mmap.

    Every access is checked (width, bounds, alignment, the region's read/write flags) with
    integer compares against values taken once from the region info: nothing is remembered per
    offset, so a sweep of a large BAR costs no memory. ``read`` and ``write`` are compiled
    where vfioctl was built with its optional extension (``vfioctl.speedups``); ``_py_read`` and
    ``_py_write`` are the same paths in Python, and the compiled ones hand them every access
    they do not take as it is."""

    def __init__(self, device: Device, info: RegionInfo):
        self.device = device
        self.info = info
        self._maps: list[MappedRegion] = []
        self._base = info.offset
        # the device's fd, for the register paths (one attribute less per access); -1 once the
        # device closed this region with it, which those paths turn into the "closed" error
        self._fd = device._fd
        # width -> the last offset a register access of that width may start at; empty where
        # the region does not allow the direction (the fast path's one lookup)
        lims = {w: info.size - w for w in WIDTHS}
        self._rlim = lims if info.readable else {}
        self._wlim = dict(lims) if info.writable else {}

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def size(self) -> int:
        return self.info.size

    def _need(self, flag: str) -> None:
        ok, word = {"read": (self.info.readable, "readable"),
                    "write": (self.info.writable, "writable")}[flag]
        if not ok:
            raise RegionAccessError(f"region {self.name} of {self.device.path} is not {word}",
                                    path=self.device.path,
                                    hint="`vfioctl info DEVICE` shows each region's flags")

    def _check_register(self, offset: int, width: int, what: str) -> None:
        """Validate a register access; raises naming the fix."""
        check_access(self.info, offset, width, width)
        self._need(what)

    def _py_read(self, offset: int, width: int = 4) -> int:
        """One pread of exactly ``width`` bytes at ``offset``."""
        try:
            lim = self._rlim[width]
        except (KeyError, TypeError):  # a bad width, or the region is not readable
            lim = -1
        if not (0 <= offset <= lim and not offset % width):
            self._check_register(offset, width, "read")
        try:  # _pread inlined: under TCG a call costs as much as these checks
            data = _os_pread(self._fd, width, self._base + offset)
        except OSError as exc:
            raise self._io_error("pread", offset, exc) from None
        if len(data) != width:
            raise self._short("pread", offset, len(data), width)
        return _from_bytes(data, "little")

    def _py_write(self, offset: int, value: int, width: int = 4) -> None:
        """One pwrite of exactly ``width`` bytes at ``offset``."""
        try:
            lim = self._wlim[width]
        except (KeyError, TypeError):
            lim = -1
        if not (0 <= offset <= lim and not offset % width):
            self._check_register(offset, width, "write")
        try:
            data = value.to_bytes(width, "little")
        except (OverflowError, AttributeError):  # negative, too large, not an int
            raise value_error(value, width) from None
        try:
            n = _os_pwrite(self._fd, data, self._base + offset)
        except OSError as exc:
            raise self._io_error("pwrite", offset, exc) from None
        if n != width:
            raise self._short("pwrite", offset, n, width)

    if compiled is None:
        read, write = _py_read, _py_write

    def _access_failed(self, what: str, offset: int, width: int, got: int) -> None:
        """Raise for the compiled paths' pread or pwrite that failed (``got``: -errno) or was
        short (``got``: the bytes it moved)."""
        if got < 0:
            raise self._io_error(what, offset, OSError(-got, os.strerror(-got)))
        raise self._short(what, offset, got, width)

    def read_bytes(self, offset: int, length: int) -> bytes:
        check_access(self.info, offset, length)
        self._need("read")
        return self._pread(offset, length)

    def readinto(self, buf, offset: int = 0) -> int:
        """Fill the writable buffer ``buf`` from ``offset`` (one preadv, no allocation);
        returns the number of bytes read, len(buf)."""
        view = writable_bytes(buf)
        check_access(self.info, offset, view.nbytes)
        self._need("read")
        try:
            n = os.preadv(self.device._fd, [view], self._base + offset)
        except OSError as exc:
            raise self._io_error("pread", offset, exc) from None
        if n != view.nbytes:
            raise self._short("pread", offset, n, view.nbytes)
        return n

    def write_bytes(self, offset: int, data: bytes) -> None:
        check_access(self.info, offset, len(data))
        self._need("write")
        self._pwrite(offset, data)

    def _io_error(self, what: str, offset: int, exc: OSError) -> KernelError:
        if self.device._fd < 0:
            self.device.fd  # noqa: B018 -- raises the device's "closed" error
        return KernelError(f"{what} {self.name}+{offset:#x}", exc.errno, self.device.path)

    def _short(self, what: str, offset: int, got: int, length: int) -> KernelError:
        return KernelError(f"{what} {self.name}+{offset:#x} (short: {got} of {length})",
                           errno.EIO, self.device.path)

    def _pread(self, offset: int, length: int) -> bytes:
        try:
            data = os.pread(self.device._fd, length, self._base + offset)
        except OSError as exc:
            raise self._io_error("pread", offset, exc) from None
        if len(data) != length:
            raise self._short("pread", offset, len(data), length)
        return data

    def _pwrite(self, offset: int, data) -> None:
        try:
            n = os.pwrite(self.device._fd, data, self._base + offset)
        except OSError as exc:
            raise self._io_error("pwrite", offset, exc) from None
        if n != len(data):
            raise self._short("pwrite", offset, n, len(data))

    def mmap(self) -> MappedRegion:
        if not self.info.mappable:
            raise RegionAccessError(f"region {self.name} of {self.device.path} cannot be mmapped",
                                    path=self.device.path,
                                    hint="use pread/pwrite access (Region.read/write)",
                                    fix="pread")
        m = MappedRegion(self)
        self._maps.append(m)
        return m

    def close(self) -> None:
        self._fd = -1
        for m in reversed(list(self._maps)):  # each close leaves the list
            m.close()
        self._maps.clear()

    def __repr__(self) -> str:
        return f"<Region {self.name} size={self.size:#x} of {self.device.path}>"


_VIEW_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


class MappedRegion:
    """The mmappable areas of a region, with width-exact register access by region offset.

    ``read``/``write`` go through a typed memoryview of the first area per width (one load or
    store of exactly that width; the view's own index check is the bounds check); offsets in
    other areas, and every error, take the checked slow path."""

    def __init__(self, region: Region):
        self.region = region
        self.areas: list[tuple[SparseArea, _mmap.mmap]] = []
        self._views: dict[tuple[int, int], memoryview] = {}
        #: width -> (typed view of area 0, its region offset): the register fast path
        self._fast: dict[int, tuple[memoryview, int]] = {}
        try:
            for area in region.info.mmap_areas():
                if area.size == 0:
                    continue
                mm = _mmap.mmap(region.device.fd, area.size, _mmap.MAP_SHARED,
                                _mmap.PROT_READ | _mmap.PROT_WRITE,
                                offset=region.info.offset + area.offset)
                self.areas.append((area, mm))
        except OSError as exc:
            self.close()
            raise KernelError(f"mmap {region.name}", exc.errno, region.device.path) from None
        if self.areas:
            start = self.areas[0][0].offset
            self._fast = {w: (self.view(w), start) for w in _VIEW_FORMATS}

    def _locate(self, offset: int, length: int, width: int | None) -> tuple[int, int]:
        """(area number, offset in the area) of an access, checked."""
        if not self.areas:
            raise RegionAccessError(f"the mmap of {self.region.name} is closed",
                                    hint="mmap the region again")
        check_access(self.region.info, offset, length, width)
        for i, (area, _mm) in enumerate(self.areas):
            if area.offset <= offset and offset + length <= area.offset + area.size:
                return i, offset - area.offset
        raise RegionAccessError(
            f"{self.region.name}+{offset:#x} is outside the region's mmappable areas "
            f"({', '.join(f'{a.offset:#x}+{a.size:#x}' for a, _ in self.areas) or 'none'})",
            hint="use pread/pwrite access (Region.read/write) for that offset", fix="pread")

    def read(self, offset: int, width: int = 4) -> int:
        """One load of exactly ``width`` bytes."""
        fast = self._fast.get(width)
        if fast is not None:
            i = offset - fast[1]
            if i >= 0 and not i % width:
                try:
                    return fast[0][i // width]
                except IndexError:
                    pass  # past area 0: another area, or past the end (the slow path says)
        i, off = self._locate(offset, width, width)
        return self.view(width, i)[off // width]

    def write(self, offset: int, value: int, width: int = 4) -> None:
        """One store of exactly ``width`` bytes."""
        fast = self._fast.get(width)
        if fast is not None:
            i = offset - fast[1]
            if i >= 0 and not i % width:
                try:
                    fast[0][i // width] = value
                    return
                except IndexError:
                    pass
                except (ValueError, TypeError):  # the view refuses the value: say why
                    raise value_error(value, width) from None
        i, off = self._locate(offset, width, width)
        if not (isinstance(value, int) and 0 <= value < (1 << (8 * width))):
            raise value_error(value, width)
        self.view(width, i)[off // width] = value

    def view(self, width: int = 4, area: int = 0) -> memoryview:
        """A typed view of one mmapped area for hot loops: ``view[i]`` is one load or store of
        ``width`` bytes at the area's offset + i * width (CPython copies a memoryview element
        with a fixed-size memcpy: one move of that width). Python checks the index; the view
        is released when the mapping closes. ``regs.u32[i]`` is ``regs.view(4)[i]``."""
        if width not in _VIEW_FORMATS:
            raise RegionAccessError(f"width {width} is not 1, 2, 4 or 8",
                                    hint="use a width of 1, 2, 4 or 8 bytes", fix="width")
        if not 0 <= area < len(self.areas):
            raise RegionAccessError(f"{self.region.name} has {len(self.areas)} mmapped "
                                    f"area(s); asked for area {area}",
                                    hint="areas are numbered from 0 in region order")
        key = (width, area)
        v = self._views.get(key)
        if v is None:
            mm = self.areas[area][1]
            v = memoryview(mm)[: len(mm) - len(mm) % width].cast(_VIEW_FORMATS[width])
            self._views[key] = v
        return v

    u8 = property(lambda self: self.view(1))
    u16 = property(lambda self: self.view(2))
    u32 = property(lambda self: self.view(4))
    u64 = property(lambda self: self.view(8))

    def read_bytes(self, offset: int, length: int) -> bytes:
        i, off = self._locate(offset, length, None)
        return self.areas[i][1][off: off + length]

    def readinto(self, buf, offset: int = 0) -> int:
        """Copy into the writable buffer ``buf`` from ``offset`` (one memcpy, no allocation);
        returns the number of bytes copied, len(buf)."""
        dst = writable_bytes(buf)
        n = dst.nbytes
        i, off = self._locate(offset, n, None)
        dst[:] = self.view(1, i)[off: off + n]
        return n

    def write_bytes(self, offset: int, data: bytes) -> None:
        i, off = self._locate(offset, len(data), None)
        self.areas[i][1][off: off + len(data)] = data

    def close(self) -> None:
        self._fast = {}  # no view may be used past the mapping
        for v in self._views.values():
            try:
                v.release()
            except BufferError:
                pass  # a caller's slice of it still lives; the mapping dies with that
        self._views.clear()
        for _, mm in reversed(self.areas):
            try:
                mm.close()
            except BufferError:
                pass  # a caller still holds a view; the mapping dies with it
        self.areas.clear()
        if self in self.region._maps:  # a closed mapping is the region's no longer
            self.region._maps.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
