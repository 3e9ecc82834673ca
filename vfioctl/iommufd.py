"""``/dev/iommu`` and its IO address spaces: IommuFD and IOAS."""
from __future__ import annotations

import ctypes
import errno
import mmap as _mmap
from dataclasses import dataclass

from . import uapi
from .errors import KernelError, UsageError
from .fd import FdOwner, open_node
from .ioctl import ioctl

PAGE_SIZE = _mmap.PAGESIZE
IOMMU_PATH = "/dev/iommu"


@dataclass(frozen=True)
class IovaRange:
    start: int
    last: int  # inclusive, as the kernel reports it


@dataclass(frozen=True)
class Mapping:
    iova: int
    length: int
    readable: bool
    writable: bool


@dataclass(frozen=True)
class HwInfo:
    data_type: int
    capabilities: int
    max_pasid_log2: int
    cap_reg: int | None = None
    ecap_reg: int | None = None


def buffer_address(buf) -> tuple[int, int, object]:
    """(address, length, keepalive) of a writable buffer-protocol object.

    The keepalive is a ctypes view exporting the buffer: while it lives, a bytearray cannot be
    resized nor an mmap closed under the IOMMU's feet.
    """
    try:
        view = memoryview(buf)
    except TypeError:
        raise UsageError(f"cannot map a {type(buf).__name__}: it has no buffer",
                         hint="pass a bytearray, mmap or writable memoryview") from None
    if view.readonly:
        raise UsageError(f"cannot map a read-only {type(buf).__name__}",
                         hint="pass a writable buffer (bytearray, mmap, writable memoryview); "
                              "use readable=True, writable=False for a device-read-only mapping")
    if not view.contiguous:
        raise UsageError("cannot map a non-contiguous buffer", hint="pass a contiguous buffer")
    length = view.nbytes
    if length == 0:
        raise UsageError("cannot map an empty buffer", hint="pass a buffer of at least one page")
    keep = (ctypes.c_char * length).from_buffer(view.cast("B"))
    return ctypes.addressof(keep), length, keep


class IOAS:
    """An IO address space of an IommuFD. Mappings are tracked and unmapped on close."""

    def __init__(self, iommufd: IommuFD, ioas_id: int):
        self.iommufd = iommufd
        self.id = ioas_id
        self._maps: dict[int, tuple[Mapping, object]] = {}
        self._destroyed = False

    # --- queries --------------------------------------------------------------------------------
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

    @property
    def mappings(self) -> list[Mapping]:
        return [m for m, _ in self._maps.values()]

    # --- map / unmap ----------------------------------------------------------------------------
    def allocate_iova(self, length: int, *, limit: int | None = None, align: int | None = None) -> int:
        """A free IOVA for ``length`` bytes inside the allowed ranges (and below ``limit``)."""
        ranges, alignment = self.iova_ranges()
        align = max(align or PAGE_SIZE, alignment or 1)
        taken = sorted((m.iova, m.iova + m.length) for m, _ in self._maps.values())
        for r in ranges:
            cur = max(r.start, align)  # never hand out IOVA 0: it reads like a null pointer
            cur = -(-cur // align) * align
            end = r.last + 1
            if limit is not None:
                end = min(end, limit)
            for t0, t1 in taken:
                if t1 <= cur or t0 >= end:
                    continue
                if t0 >= cur + length:
                    break
                cur = -(-t1 // align) * align
            if cur + length <= end:
                return cur
        below = f" below {limit:#x}" if limit is not None else ""
        raise UsageError(f"no free IOVA range of {length:#x} bytes{below} in IOAS {self.id}",
                         hint="unmap something first, or map a smaller buffer")

    def map(self, buf, iova: int | None = None, *, readable: bool = True, writable: bool = True,
            limit: int | None = None) -> Mapping:
        """Map a writable buffer at ``iova`` (or one chosen inside the allowed ranges).

        ``readable``/``writable`` are the device's rights. Note: intel-iommu (VT-d) maps every
        present page readable (Linux 6.12 ``__domain_mapping`` sets DMA_FL_PTE_PRESENT, which is
        the READ bit), so there a write-only mapping can still be read by the device; a
        read-only mapping is enforced.
        """
        addr, length, keep = buffer_address(buf)
        try:
            iova, flags = self._map_args(addr, length, iova, readable, writable, limit)
            arg = uapi.iommu_ioas_map(flags=flags, ioas_id=self.id, user_va=addr, length=length,
                                      iova=iova)
            self._ioctl(uapi.IOMMU_IOAS_MAP, arg, "IOMMU_IOAS_MAP")
        except BaseException:
            del keep  # release the buffer export now, so that the caller may close its mmap
            raise
        m = Mapping(arg.iova, length, readable, writable)
        self._maps[m.iova] = (m, keep)
        return m

    def _map_args(self, addr: int, length: int, iova: int | None, readable: bool,
                  writable: bool, limit: int | None) -> tuple[int, int]:
        """Check a mapping request; the IOVA to use and the IOMMU_IOAS_MAP flags."""
        if addr % PAGE_SIZE or length % PAGE_SIZE:
            raise UsageError(
                f"buffer at {addr:#x} of {length:#x} bytes is not page aligned "
                f"({PAGE_SIZE:#x})",
                hint="use an mmap or session.dma_alloc(size): both are page aligned")
        if not (readable or writable):
            raise UsageError("a mapping must be readable or writable by the device",
                             hint="pass readable=True and/or writable=True")
        if iova is None:
            iova = self.allocate_iova(length, limit=limit)
        elif iova % PAGE_SIZE:
            raise UsageError(f"IOVA {iova:#x} is not page aligned ({PAGE_SIZE:#x})",
                             hint=f"use a multiple of {PAGE_SIZE:#x}")
        flags = uapi.IOMMU_IOAS_MAP_FIXED_IOVA
        flags |= uapi.IOMMU_IOAS_MAP_READABLE if readable else 0
        flags |= uapi.IOMMU_IOAS_MAP_WRITEABLE if writable else 0
        return iova, flags

    def unmap(self, iova: int, length: int | None = None) -> int:
        """Unmap what was mapped at ``iova``; returns the number of bytes unmapped."""
        if length is None:
            if iova not in self._maps:
                raise UsageError(f"nothing is mapped at IOVA {iova:#x}",
                                 hint="pass the IOVA a map() returned, or an explicit length")
            length = self._maps[iova][0].length
        arg = uapi.iommu_ioas_unmap(ioas_id=self.id, iova=iova, length=length)
        self._ioctl(uapi.IOMMU_IOAS_UNMAP, arg, "IOMMU_IOAS_UNMAP")
        for k in [k for k, (m, _) in self._maps.items() if iova <= m.iova < iova + length]:
            del self._maps[k]
        return arg.length

    def unmap_all(self) -> int:
        """IOMMU_IOAS_UNMAP of the whole IOVA space (iova 0, length UINT64_MAX)."""
        arg = uapi.iommu_ioas_unmap(ioas_id=self.id, iova=0, length=(1 << 64) - 1)
        self._ioctl(uapi.IOMMU_IOAS_UNMAP, arg, "IOMMU_IOAS_UNMAP")
        self._maps.clear()
        return arg.length

    # --- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap everything and destroy the IOAS; safe twice, and after the iommufd closed."""
        if self._destroyed:
            return
        self._destroyed = True
        if self.iommufd.closed:
            self._maps.clear()
            return
        try:
            if self._maps:
                self.unmap_all()
        finally:
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
        ioctl(self.iommufd.fd, request, arg, op=op, path=self.iommufd.path)

    def __repr__(self) -> str:
        return f"<IOAS {self.id} of {self.iommufd.path}, {len(self._maps)} mappings>"


class IommuFD(FdOwner):
    """An open ``/dev/iommu``. IOASes allocated from it are destroyed before it closes."""

    def __init__(self, path: str = IOMMU_PATH):
        fd = open_node(path, "the iommufd node", missing_hint=(
            "the kernel needs CONFIG_IOMMUFD (modprobe iommufd); `vfioctl doctor` checks this"))
        super().__init__(fd, path)
        self._ioases: list[IOAS] = []

    def alloc_ioas(self) -> IOAS:
        arg = uapi.iommu_ioas_alloc()
        ioctl(self.fd, uapi.IOMMU_IOAS_ALLOC, arg, op="IOMMU_IOAS_ALLOC", path=self.path)
        ioas = IOAS(self, arg.out_ioas_id)
        self._ioases.append(ioas)
        return ioas

    def destroy(self, object_id: int) -> None:
        arg = uapi.iommu_destroy(id=object_id)
        ioctl(self.fd, uapi.IOMMU_DESTROY, arg, op="IOMMU_DESTROY", path=self.path)

    def hw_info(self, devid: int) -> HwInfo:
        data = uapi.iommu_hw_info_vtd()
        arg = uapi.iommu_hw_info(dev_id=devid, data_len=ctypes.sizeof(data),
                                 data_uptr=ctypes.addressof(data))
        ioctl(self.fd, uapi.IOMMU_GET_HW_INFO, arg, op="IOMMU_GET_HW_INFO", path=self.path)
        vtd = arg.out_data_type == uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD
        return HwInfo(arg.out_data_type, arg.out_capabilities, arg.out_max_pasid_log2,
                      data.cap_reg if vtd else None, data.ecap_reg if vtd else None)

    def alloc_hwpt(self, devid: int, pt_id: int, flags: int = 0) -> int:
        """IOMMU_HWPT_ALLOC of a paging domain for ``devid`` backed by IOAS ``pt_id``."""
        arg = uapi.iommu_hwpt_alloc(flags=flags, dev_id=devid, pt_id=pt_id)
        ioctl(self.fd, uapi.IOMMU_HWPT_ALLOC, arg, op="IOMMU_HWPT_ALLOC", path=self.path)
        return arg.out_hwpt_id

    def _forget(self, ioas: IOAS) -> None:
        if ioas in self._ioases:
            self._ioases.remove(ioas)

    def _teardown(self) -> None:
        for ioas in reversed(list(self._ioases)):
            try:
                ioas.close()
            except Exception:
                pass  # the fd closing releases it all anyway
        self._ioases.clear()
