"""The legacy VFIO path: a group node ``/dev/vfio/GROUP`` and the container ``/dev/vfio/vfio``.

The container is served either by VFIO's own type1 driver (``CONFIG_VFIO_CONTAINER``) or by
iommufd (``CONFIG_IOMMUFD_VFIO_CONTAINER``); the ioctls are the same. The kernel's order:
open the group, check it is viable, ``VFIO_GROUP_SET_CONTAINER``, ``VFIO_SET_IOMMU`` (once, after
the first group joined), then ``VFIO_GROUP_GET_DEVICE_FD`` with the device's name.
"""
from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass

from . import uapi
from .errors import EnvironmentProblem, KernelError, UsageError
from .fd import FdOwner, open_node
from .ioctl import ioctl, ioctl_filled
from .iova import DmaSpace, IovaRange, parse_caps
from .kernel import fd_container_kind

CONTAINER_PATH = "/dev/vfio/vfio"
_MAP_SIZE = ctypes.sizeof(uapi.vfio_iommu_type1_dma_map)
_UNMAP_SIZE = ctypes.sizeof(uapi.vfio_iommu_type1_dma_unmap)
_DMA_R, _DMA_W = uapi.VFIO_DMA_MAP_FLAG_READ, uapi.VFIO_DMA_MAP_FLAG_WRITE
_MAP_DMA, _UNMAP_DMA = uapi.VFIO_IOMMU_MAP_DMA, uapi.VFIO_IOMMU_UNMAP_DMA

#: VFIO_SET_IOMMU types by the names the kernel's selftests give the modes
IOMMU_TYPES = {"type1": uapi.VFIO_TYPE1_IOMMU, "type1v2": uapi.VFIO_TYPE1v2_IOMMU}


class Group(FdOwner):
    """An open ``/dev/vfio/GROUP`` (the kernel allows one open at a time)."""

    def __init__(self, group_id: int | str, devfs: str = "/dev"):
        path = f"{devfs}/vfio/{group_id}"
        try:
            fd = open_node(path, "the VFIO group", missing_hint=(
                "bind the device to vfio-pci first (the kernel makes /dev/vfio/GROUP then)"))
        except KernelError as exc:
            if exc.errno == errno.EBUSY:
                raise EnvironmentProblem(
                    f"VFIO group {group_id} is already open ({path}: EBUSY)", errno=exc.errno,
                    op="open", path=path,
                    hint="another process (or a device cdev bound to iommufd) holds the group; "
                         "close it and try again") from None
            raise
        super().__init__(fd, path)
        self.id = int(group_id)
        self.container: Container | None = None

    def status(self) -> int:
        arg = uapi.vfio_group_status()
        ioctl(self._fd, uapi.VFIO_GROUP_GET_STATUS, arg, op="VFIO_GROUP_GET_STATUS",
              path=self.path)
        return arg.flags

    @property
    def viable(self) -> bool:
        return bool(self.status() & uapi.VFIO_GROUP_FLAGS_VIABLE)

    def set_container(self, container: Container) -> None:
        arg = ctypes.c_int32(container.fd)
        ioctl(self._fd, uapi.VFIO_GROUP_SET_CONTAINER, arg, op="VFIO_GROUP_SET_CONTAINER",
              path=self.path)
        self.container = container

    def unset_container(self) -> None:
        ioctl(self._fd, uapi.VFIO_GROUP_UNSET_CONTAINER, 0, op="VFIO_GROUP_UNSET_CONTAINER",
              path=self.path)
        self.container = None

    def device_fd(self, name: str) -> int:
        """VFIO_GROUP_GET_DEVICE_FD: a new fd of the device ``name`` (``"BDF"``, or
        ``"BDF vf_token=UUID"``)."""
        buf = ctypes.create_string_buffer(name.encode())
        return ioctl(self._fd, uapi.VFIO_GROUP_GET_DEVICE_FD, buf,
                     op=f"VFIO_GROUP_GET_DEVICE_FD({name})", path=self.path)

    def _teardown(self) -> None:
        self.container = None  # closing the group fd leaves the container


class Container(FdOwner, DmaSpace):
    """An open ``/dev/vfio/vfio``; ``iommu_type`` is set with ``set_iommu`` once a group joined.
    As a DmaSpace it maps user buffers with VFIO_IOMMU_MAP_DMA, and unmaps them on close."""

    def __init__(self, path: str = CONTAINER_PATH):
        fd = open_node(path, "the VFIO container", missing_hint=(
            "the kernel needs CONFIG_VFIO_CONTAINER or CONFIG_IOMMUFD_VFIO_CONTAINER, and the "
            "vfio module loaded (modprobe vfio-pci)"))
        FdOwner.__init__(self, fd, path)
        DmaSpace.__init__(self)
        self.label = f"the container {path}"
        self.iommu_type: int | None = None

    def served_by(self) -> str:
        """``"iommufd"`` (its compat container) or ``"legacy"`` (VFIO's own): asked of this fd,
        as opened (before an IOMMU type is set)."""
        return fd_container_kind(self._fd)

    def api_version(self) -> int:
        return ioctl(self._fd, uapi.VFIO_GET_API_VERSION, 0, op="VFIO_GET_API_VERSION",
                     path=self.path)

    def check_extension(self, ext: int) -> bool:
        return bool(ioctl(self._fd, uapi.VFIO_CHECK_EXTENSION, ext, op="VFIO_CHECK_EXTENSION",
                          path=self.path))

    def set_iommu(self, iommu_type: int) -> None:
        ioctl(self._fd, uapi.VFIO_SET_IOMMU, iommu_type, op="VFIO_SET_IOMMU", path=self.path)
        self.iommu_type = iommu_type

    def info(self) -> Type1Info:
        """VFIO_IOMMU_GET_INFO: page sizes and the capability chain (IOVA ranges, DMA limit)."""
        head = uapi.vfio_iommu_type1_info()
        ioctl(self._fd, uapi.VFIO_IOMMU_GET_INFO, head, op="VFIO_IOMMU_GET_INFO", path=self.path)
        buf = bytearray(max(head.argsz, ctypes.sizeof(head)))
        buf[: ctypes.sizeof(head)] = bytes(uapi.vfio_iommu_type1_info(argsz=len(buf)))
        ioctl(self._fd, uapi.VFIO_IOMMU_GET_INFO, buf, op="VFIO_IOMMU_GET_INFO", path=self.path)
        head = uapi.vfio_iommu_type1_info.from_buffer_copy(buf)
        ranges, avail, cap_ids = None, None, []
        first = head.cap_offset if head.flags & uapi.VFIO_IOMMU_INFO_CAPS else 0
        for cap_id, _version, off in parse_caps(bytes(buf), first):
            cap_ids.append(cap_id)
            if cap_id == uapi.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
                cap = uapi.vfio_iommu_type1_info_cap_iova_range.from_buffer_copy(buf, off)
                size = ctypes.sizeof(uapi.vfio_iova_range)
                base = off + ctypes.sizeof(cap)
                if base + cap.nr_iovas * size > len(buf):
                    raise KernelError("VFIO_IOMMU_GET_INFO (IOVA range capability truncated)",
                                      errno.EIO, self.path)
                ranges = tuple(
                    IovaRange(r.start, r.end)
                    for r in (uapi.vfio_iova_range.from_buffer_copy(buf, base + i * size)
                              for i in range(cap.nr_iovas)))
            elif cap_id == uapi.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
                avail = uapi.vfio_iommu_type1_info_dma_avail.from_buffer_copy(buf, off).avail
        pgsizes = head.iova_pgsizes if head.flags & uapi.VFIO_IOMMU_INFO_PGSIZES else 0
        return Type1Info(pgsizes, ranges, avail, tuple(cap_ids))

    # --- DmaSpace -------------------------------------------------------------------------------
    def iova_ranges(self) -> tuple[list[IovaRange], int]:
        """The IOVA ranges of the type1 capability chain (the whole 64-bit space if the kernel
        reports none); the alignment is the smallest IOMMU page size."""
        info = self.info()
        ranges = list(info.ranges) if info.ranges is not None else [IovaRange(0, (1 << 64) - 1)]
        return ranges, info.min_page

    def _map_ioctl(self, addr, iova, length, readable, writable) -> None:
        # the hot path, as IOAS's: reused structs (one per caller at a time), the seam direct
        try:
            arg = self._map_args.pop()
        except IndexError:
            arg = uapi.vfio_iommu_type1_dma_map(argsz=_MAP_SIZE)
        arg.flags = (_DMA_R if readable else 0) | (_DMA_W if writable else 0)
        arg.vaddr = addr
        arg.iova = iova
        arg.size = length
        try:
            ioctl_filled(self._fd, _MAP_DMA, arg, "VFIO_IOMMU_MAP_DMA", self.path)
        finally:
            self._map_args.append(arg)

    def _unmap_ioctl(self, iova, length) -> int:
        try:
            arg = self._unmap_args.pop()
        except IndexError:
            arg = uapi.vfio_iommu_type1_dma_unmap(argsz=_UNMAP_SIZE)
        arg.iova = iova
        arg.size = length
        try:
            ioctl_filled(self._fd, _UNMAP_DMA, arg, "VFIO_IOMMU_UNMAP_DMA", self.path)
            return arg.size
        finally:
            self._unmap_args.append(arg)

    def _compiled_args(self) -> tuple | None:
        if self.iommu_type is None:  # no IOMMU type yet: the kernel refuses a map
            return None
        return (self,
                (_MAP_DMA, uapi.vfio_iommu_type1_dma_map(argsz=_MAP_SIZE), "VFIO_IOMMU_MAP_DMA",
                 ("flags", "vaddr", "iova", "size"), 0, _DMA_R, _DMA_W),
                (_UNMAP_DMA, uapi.vfio_iommu_type1_dma_unmap(argsz=_UNMAP_SIZE),
                 "VFIO_IOMMU_UNMAP_DMA", ("iova", "size")))

    def _prepared_args(self, m, addr: int) -> tuple:
        flags = (_DMA_R if m.readable else 0) | (_DMA_W if m.writable else 0)
        mp = uapi.vfio_iommu_type1_dma_map(argsz=_MAP_SIZE, flags=flags, vaddr=addr,
                                           iova=m.iova, size=m.length)
        un = uapi.vfio_iommu_type1_dma_unmap(argsz=_UNMAP_SIZE, iova=m.iova, size=m.length)
        return (self, (_MAP_DMA, mp, "VFIO_IOMMU_MAP_DMA"),
                (_UNMAP_DMA, un, "VFIO_IOMMU_UNMAP_DMA", "size"))

    def _unmap_all_ioctl(self) -> int:
        """What this container object mapped, one by one (a container shared by two sessions of
        one group must not lose the other's mappings to VFIO_DMA_UNMAP_FLAG_ALL)."""
        return sum(self._unmap_ioctl(m.iova, m.length) for m, _ in list(self._maps.values()))

    def _teardown(self) -> None:
        if self._maps and self.iommu_type is not None:
            try:
                self.unmap_all()
            except KernelError:
                pass  # closing the container releases them anyway
        self._forget_all()


@dataclass(frozen=True)
class Type1Info:
    """What VFIO_IOMMU_GET_INFO reports: ``pgsizes`` (bitmap of IOMMU page sizes), ``ranges``
    (usable IOVA ranges; None if the kernel gave no such capability), ``dma_avail`` (how many
    more mappings the container accepts; None if not reported), the capability ids seen."""

    pgsizes: int
    ranges: tuple[IovaRange, ...] | None
    dma_avail: int | None
    cap_ids: tuple[int, ...]

    @property
    def min_page(self) -> int:
        return self.pgsizes & -self.pgsizes if self.pgsizes else 4096

    def to_dict(self) -> dict:
        return {"iova_pgsizes": self.pgsizes, "dma_avail": self.dma_avail,
                "iova_ranges": [[r.start, r.last] for r in self.ranges or ()]}


def iommu_type(name: str) -> int:
    try:
        return IOMMU_TYPES[name]
    except KeyError:
        raise UsageError(f"unknown container IOMMU type {name!r}",
                         hint="use type1 or type1v2") from None
