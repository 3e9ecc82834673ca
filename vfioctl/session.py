"""``vfioctl.open(DEVICE)``: a device opened, bound to a new iommufd and attached to a new IOAS."""
from __future__ import annotations

import errno
import mmap as _mmap
from dataclasses import dataclass

from .device import Device, Region
from .errors import KernelError, UsageError
from .iommufd import IOMMU_PATH, PAGE_SIZE, IOAS, IommuFD, Mapping
from .pci import PciDevice, require_cdev, resolve


@dataclass
class DmaBuffer:
    """A page-aligned anonymous buffer mapped for DMA at ``iova``."""

    iova: int
    size: int
    mem: _mmap.mmap
    mapping: Mapping

    @property
    def view(self) -> memoryview:
        return memoryview(self.mem)

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        end = self.size if length is None else offset + length
        return self.mem[offset:end]

    def write(self, data: bytes, offset: int = 0) -> None:
        self.mem[offset: offset + len(data)] = data

    def fill(self, byte: int = 0) -> None:
        self.mem[:] = bytes([byte]) * self.size


class Session:
    """Owns, in order of creation: the iommufd, the device (bound), the IOAS (attached), the
    regions and DMA buffers. ``close()`` tears them down in reverse and is safe twice."""

    def __init__(self, device: str | PciDevice, *, iommu_path: str = IOMMU_PATH):
        self.pci = device if isinstance(device, PciDevice) else resolve(device)
        cdev = require_cdev(self.pci)
        self._dma: list[DmaBuffer] = []
        self.iommufd: IommuFD | None = None
        self.device: Device | None = None
        self.ioas: IOAS | None = None
        try:
            self.iommufd = IommuFD(iommu_path)
            self.device = Device(str(cdev), bdf=self.pci.bdf)
            self.devid = self.device.bind(self.iommufd)
            self.ioas = self.iommufd.alloc_ioas()
            self.device.attach(self.ioas)
        except BaseException:
            self.close()
            raise

    def region(self, name: str | int) -> Region:
        return self.device.region(name)

    def dma_alloc(self, size: int, *, iova: int | None = None, readable: bool = True,
                  writable: bool = True, limit: int | None = None) -> DmaBuffer:
        """A zeroed, page-aligned buffer mapped into the IOAS (at ``iova`` or a free one below
        ``limit``, e.g. a device's DMA mask). Unmapped and freed when the session closes."""
        if size <= 0:
            raise UsageError(f"DMA size {size} is not positive", hint="ask for at least 1 byte")
        length = -(-size // PAGE_SIZE) * PAGE_SIZE
        mem = _mmap.mmap(-1, length, _mmap.MAP_SHARED | _mmap.MAP_ANONYMOUS)
        try:
            m = self.ioas.map(mem, iova, readable=readable, writable=writable, limit=limit)
        except BaseException:
            mem.close()  # IOAS.map released its export of mem before raising
            raise
        buf = DmaBuffer(m.iova, length, mem, m)
        self._dma.append(buf)
        return buf

    def dma_free(self, buf: DmaBuffer) -> None:
        if buf in self._dma:
            self._dma.remove(buf)
            if self.ioas is not None and not self.iommufd.closed:
                self.ioas.unmap(buf.iova)
            try:
                buf.mem.close()
            except BufferError:
                pass

    def close(self) -> None:
        """Reverse order: DMA buffers, regions, detach, IOAS, device, iommufd."""
        for buf in reversed(list(self._dma)):
            try:
                self.dma_free(buf)
            except KernelError:
                pass
        if self.device is not None and not self.device.closed:
            self.device._teardown()
            if self.device.attached_pt is not None:
                try:
                    self.device.detach()
                except KernelError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENODEV):
                        raise
        if self.ioas is not None:
            self.ioas.close()
        if self.device is not None:
            self.device.close()
        if self.iommufd is not None:
            self.iommufd.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Session {self.pci.bdf} devid={getattr(self, 'devid', None)}>"


def open(device: str | PciDevice, *, iommu_path: str = IOMMU_PATH) -> Session:  # noqa: A001
    """Open DEVICE's cdev, bind a new iommufd, attach a new IOAS: a ready session."""
    return Session(device, iommu_path=iommu_path)
