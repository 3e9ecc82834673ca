"""``/dev/iommu`` and its IO address spaces: IommuFD and IOAS."""
from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass

from . import uapi
from .errors import KernelError
from .fd import FdOwner, open_node
from .ioctl import ioctl, ioctl_filled
from .iova import PAGE_SIZE, DmaSpace, IovaRange, Mapping, buffer_address  # noqa: F401

IOMMU_PATH = "/dev/iommu"
_MAP_SIZE = ctypes.sizeof(uapi.iommu_ioas_map)
_UNMAP_SIZE = ctypes.sizeof(uapi.iommu_ioas_unmap)
_MAP_FIXED = uapi.IOMMU_IOAS_MAP_FIXED_IOVA
_MAP_R = uapi.IOMMU_IOAS_MAP_READABLE
_MAP_W = uapi.IOMMU_IOAS_MAP_WRITEABLE
_IOAS_MAP = uapi.IOMMU_IOAS_MAP
_IOAS_UNMAP = uapi.IOMMU_IOAS_UNMAP


@dataclass(frozen=True)
class HwInfo:
    data_type: int
    capabilities: int
    max_pasid_log2: int
    cap_reg: int | None = None
    ecap_reg: int | None = None


class IOAS(DmaSpace):
    """An IO address space of an IommuFD. Mappings are tracked and unmapped on close."""

    pins_pages = True

    def __init__(self, iommufd: IommuFD, ioas_id: int):
        DmaSpace.__init__(self)
        self.iommufd = iommufd
        self.id = ioas_id
        self._destroyed = False

    @property
    def label(self) -> str:
        """How error messages name it (made when one is, not with every IOAS)."""
        return f"IOAS {self.id}"

    def iova_ranges(self) -> tuple[list[IovaRange], int]:
        """The IOVA ranges the IOAS allows now, and the required IOVA alignment."""
        arg = uapi.iommu_ioas_iova_ranges(ioas_id=self.id)
        try:
            self._ioctl(uapi.IOMMU_IOAS_IOVA_RANGES, arg, "IOMMU_IOAS_IOVA_RANGES")
        except KernelError as exc:  # EMSGSIZE: num_iovas now says how many there are
            if exc.errno != errno.EMSGSIZE:
                raise
        n = arg.num_iovas
        ranges = (uapi.iommu_iova_range * max(n, 1))()
        arg = uapi.iommu_ioas_iova_ranges(ioas_id=self.id, num_iovas=n,
                                          allowed_iovas=ctypes.addressof(ranges))
        self._ioctl(uapi.IOMMU_IOAS_IOVA_RANGES, arg, "IOMMU_IOAS_IOVA_RANGES")
        out = [IovaRange(r.start, r.last) for r in ranges[: arg.num_iovas]]
        return out, arg.out_iova_alignment

    def _map_ioctl(self, addr, iova, length, readable, writable) -> None:
        # the hot path: one struct per direction reused (taken from a list, so that two threads
        # never share one), the seam called directly
        try:
            arg = self._map_args.pop()
        except IndexError:
            arg = uapi.iommu_ioas_map(size=_MAP_SIZE, ioas_id=self.id)
        arg.flags = (_MAP_FIXED | (_MAP_R if readable else 0) | (_MAP_W if writable else 0))
        arg.user_va = addr
        arg.length = length
        arg.iova = iova
        fd = self.iommufd
        try:
            ioctl_filled(fd._fd, _IOAS_MAP, arg, "IOMMU_IOAS_MAP", fd.path)
        finally:
            self._map_args.append(arg)

    def _unmap_ioctl(self, iova, length) -> int:
        try:
            arg = self._unmap_args.pop()
        except IndexError:
            arg = uapi.iommu_ioas_unmap(size=_UNMAP_SIZE, ioas_id=self.id)
        arg.iova = iova
        arg.length = length
        fd = self.iommufd
        try:
            ioctl_filled(fd._fd, _IOAS_UNMAP, arg, "IOMMU_IOAS_UNMAP", fd.path)
            return arg.length
        finally:
            self._unmap_args.append(arg)

    def _unmap_all_ioctl(self) -> int:
        """IOMMU_IOAS_UNMAP of the whole IOVA space (iova 0, length UINT64_MAX)."""
        return self._unmap_ioctl(0, (1 << 64) - 1)

    def _compiled_args(self) -> tuple:
        return (self.iommufd,
                (_IOAS_MAP, uapi.iommu_ioas_map(size=_MAP_SIZE, ioas_id=self.id),
                 "IOMMU_IOAS_MAP", ("flags", "user_va", "iova", "length"), _MAP_FIXED, _MAP_R,
                 _MAP_W),
                (_IOAS_UNMAP, uapi.iommu_ioas_unmap(size=_UNMAP_SIZE, ioas_id=self.id),
                 "IOMMU_IOAS_UNMAP", ("iova", "length")))

    def _prepared_args(self, m: Mapping, addr: int) -> tuple:
        flags = _MAP_FIXED | (_MAP_R if m.readable else 0) | (_MAP_W if m.writable else 0)
        mp = uapi.iommu_ioas_map(size=_MAP_SIZE, flags=flags, ioas_id=self.id, user_va=addr,
                                 length=m.length, iova=m.iova)
        un = uapi.iommu_ioas_unmap(size=_UNMAP_SIZE, ioas_id=self.id, iova=m.iova,
                                   length=m.length)
        return (self.iommufd, (_IOAS_MAP, mp, "IOMMU_IOAS_MAP"),
                (_IOAS_UNMAP, un, "IOMMU_IOAS_UNMAP", "length"))

    # --- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap everything and destroy the IOAS; safe twice, and after the iommufd closed."""
        if self._destroyed:
            return
        self._destroyed = True
        if self.iommufd._fd < 0:  # closed (its ``closed``, without the property's call)
            self._forget_all()
            return
        try:
            if self._maps:
                self.unmap_all()
        finally:
            self._forget_all()
            try:
                self.iommufd.destroy(self.id)
            except KernelError as exc:
                if exc.errno == errno.EBUSY:
                    exc.hint = "detach the devices attached to this IOAS first (or close them)"
                raise
            finally:
                self.iommufd._forget(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ioctl(self, request: int, arg, op: str) -> None:
        ioctl(self.iommufd._fd, request, arg, op=op, path=self.iommufd.path)

    def __repr__(self) -> str:
        return f"<IOAS {self.id} of {self.iommufd.path}, {len(self._maps)} mappings>"


class IommuFD(FdOwner):
    """An open ``/dev/iommu``. IOASes allocated from it are destroyed before it closes."""

    def __init__(self, path: str = IOMMU_PATH):
        fd = open_node(path, "the iommufd node", missing_hint=(
            "the kernel needs CONFIG_IOMMUFD (modprobe iommufd); `vfioctl doctor` checks this"))
        FdOwner.__init__(self, fd, path)  # not super(), whose object a session open pays for
        self._ioases: list[IOAS] = []

    def alloc_ioas(self) -> IOAS:
        arg = uapi.iommu_ioas_alloc()
        ioctl(self._fd, uapi.IOMMU_IOAS_ALLOC, arg, op="IOMMU_IOAS_ALLOC", path=self.path)
        ioas = IOAS(self, arg.out_ioas_id)
        self._ioases.append(ioas)
        return ioas

    def destroy(self, object_id: int) -> None:
        arg = uapi.iommu_destroy(id=object_id)
        ioctl(self._fd, uapi.IOMMU_DESTROY, arg, op="IOMMU_DESTROY", path=self.path)

    def hw_info(self, devid: int) -> HwInfo:
        data = uapi.iommu_hw_info_vtd()
        arg = uapi.iommu_hw_info(dev_id=devid, data_len=ctypes.sizeof(data),
                                 data_uptr=ctypes.addressof(data))
        ioctl(self._fd, uapi.IOMMU_GET_HW_INFO, arg, op="IOMMU_GET_HW_INFO", path=self.path)
        vtd = arg.out_data_type == uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD
        return HwInfo(arg.out_data_type, arg.out_capabilities, arg.out_max_pasid_log2,
                      data.cap_reg if vtd else None, data.ecap_reg if vtd else None)

    def alloc_hwpt(self, devid: int, pt_id: int, flags: int = 0) -> int:
        """IOMMU_HWPT_ALLOC of a paging domain for ``devid`` backed by IOAS ``pt_id``."""
        arg = uapi.iommu_hwpt_alloc(flags=flags, dev_id=devid, pt_id=pt_id)
        ioctl(self._fd, uapi.IOMMU_HWPT_ALLOC, arg, op="IOMMU_HWPT_ALLOC", path=self.path)
        return arg.out_hwpt_id

    def _forget(self, ioas: IOAS) -> None:
        if ioas in self._ioases:
            self._ioases.remove(ioas)

    def close(self) -> None:
        """Close the fd: the kernel destroys every object of it and unpins every mapping
        (iommufd_fops_release), so no ioctl goes first; the IOASes then forget their mappings
        and release the buffers they kept exported."""
        if self._fd < 0:  # closed already (and __del__ calls it again)
            return
        ioases = list(self._ioases)
        try:
            super().close()
        finally:
            for ioas in reversed(ioases):
                ioas.close()  # sees the fd closed: bookkeeping only
            self._ioases.clear()
