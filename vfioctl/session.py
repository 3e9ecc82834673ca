"""``vfioctl.open(DEVICE)``: a device opened in an IOMMU mode, ready for regions, DMA and IRQs."""
from __future__ import annotations

import errno
import mmap as _mmap
from dataclasses import dataclass

from . import memory
from .backend import AUTO, IommuBackend, open_backend, requested_mode
from .container import Container
from .device import Device, Region, uuid_bytes
from .errors import EnvironmentProblem, KernelError, UsageError, VfTokenRefused, errno_name
from .iommufd import IOMMU_PATH, IOAS, IommuFD
from .iova import DmaSpace, Mapping
from .pci import PciDevice, require_vfio_pci, resolve_bound


@dataclass
class DmaBuffer:
    """A page-aligned anonymous buffer mapped for DMA at ``iova``."""

    iova: int
    size: int
    mem: _mmap.mmap
    mapping: Mapping
    #: the page kind (None: 4 KiB pages, "thp", "2M", "1G"; see vfioctl.memory)
    hugepages: str | None = None

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


def check_vf_token(pci: PciDevice, token: str) -> None:
    """A VF token must be a UUID, and goes only to a VF whose PF is on vfio-pci (opening it
    under the PF's token) or to an SR-IOV PF (setting or proving the token): anything else the
    kernel refuses with EINVAL, which says less than this."""
    uuid_bytes(token)  # UsageError naming the form
    pf = pci.physfn
    if pf is None and not pci.sriov_totalvfs:
        raise UsageError(f"{pci.bdf} is neither an SR-IOV VF nor an SR-IOV PF: a VF token "
                         "does not apply to it", hint="open it without a VF token")
    if pf is not None and pf.driver != "vfio-pci":
        raise UsageError(f"{pci.bdf}'s PF {pf.bdf} is on {pf.driver or 'no driver'}, not "
                         "vfio-pci: a VF token applies only while the PF is on vfio-pci",
                         hint="open the VF without a VF token")


def token_refused(pci: PciDevice, vf_token: str | None, exc: KernelError) -> VfTokenRefused:
    """The kernel's EACCES on opening an SR-IOV device, in words: the token it wanted."""
    pf = pci.physfn
    if pf is not None:
        what = (f"{pci.bdf} is a VF of {pf.bdf}, which is on vfio-pci: opening it needs the "
                "PF's VF token" if vf_token is None else
                f"the kernel refused the VF token for {pci.bdf}: it is not the token {pf.bdf} "
                "(its PF, on vfio-pci) holds")
        hint = ("pass the token the PF's user set (it is never read back from the kernel); "
                "the PF's user sets it with set_vf_token")
    else:
        what = (f"{pci.bdf} is an SR-IOV PF whose VFs are open through vfio-pci: opening it "
                "needs their VF token" + ("" if vf_token is None else
                                          "; the one given is not it"))
        hint = "pass the VF token the VFs were opened with"
    return VfTokenRefused(f"{what} ({errno_name(exc.errno)} from {exc.op})", errno=exc.errno,
                          op=exc.op, path=exc.path, hint=hint)


class Session:
    """A device opened in one IOMMU mode, ready to use. Owns, in order of creation: the IOMMU
    backend (iommufd + IOAS, or group + container, shared with other sessions on the same group
    in this process), the device, and the DMA buffers. ``close()`` tears them down in reverse
    and is safe twice.

    ``iommu_mode`` is one of backend.MODES or ``auto`` (default; $VFIOCTL_IOMMU_MODE overrides
    the default); the mode used is ``session.iommu_mode``. ``vf_token`` (a UUID) opens a VF whose
    PF is on vfio-pci.

    ``share_with`` (an open session): the device joins that session's IOMMU mode and DMA space
    (its IOAS, or its container, which the device's group joins), so each device sees every
    mapping of the space, whichever session made it: one device's DMA can reach a buffer the
    other mapped, or the other's BAR (peer to peer, where the mode maps device memory). The
    space closes with the last of its sessions.
    """

    def __init__(self, device: str | PciDevice, *, iommu_mode: str | None = None,
                 vf_token: str | None = None, iommu_path: str = IOMMU_PATH,
                 share_with: Session | None = None):
        mode = requested_mode(iommu_mode)  # a mode that is no mode, before the device
        if isinstance(device, PciDevice):
            require_vfio_pci(device)
            self.pci = device
        else:
            self.pci = resolve_bound(device)
        if vf_token is not None:
            check_vf_token(self.pci, vf_token)
        self._dma: list[DmaBuffer] = []
        self._driver = None
        self.device: Device | None = None
        self.backend: IommuBackend | None
        if share_with is None:
            self.backend, seen = open_backend(mode, self.pci, iommu_path=iommu_path)
        else:
            self.backend, seen = share_with._share(self.pci, iommu_mode)
        self.iommu_mode = self.backend.mode
        try:
            self.device = self.backend.open_device(self.pci, vf_token=vf_token, **seen)
        except KernelError as exc:
            self.close()
            if exc.errno == errno.EACCES and (self.pci.physfn or self.pci.sriov_totalvfs):
                raise token_refused(self.pci, vf_token, exc) from None
            raise
        except BaseException:
            self.close()
            raise

    def _share(self, pci: PciDevice, iommu_mode: str | None) -> tuple[IommuBackend, dict]:
        """This session's backend, for another session's device ``pci`` (see share_with)."""
        if self.backend is None:
            raise UsageError(f"{pci.bdf} cannot share the DMA space of {self.pci.bdf}: that "
                             "session is closed", hint="share an open session's space")
        if iommu_mode not in (None, AUTO, self.backend.mode):
            raise UsageError(f"{pci.bdf} cannot share the DMA space of {self.pci.bdf} in mode "
                             f"{iommu_mode}: that space is {self.backend.mode}'s",
                             hint=f"leave the IOMMU mode out, or ask for {self.backend.mode}")
        return self.backend, self.backend.share(pci)

    # --- what the mode provides ---------------------------------------------------------------
    @property
    def dma(self) -> DmaSpace:
        """The DMA space the device sees: the IOAS, or the container."""
        if self.backend is None:
            raise EnvironmentProblem(f"the session of {self.pci.bdf} is closed", op="use",
                                     hint="open the device again")
        return self.backend.dma

    @property
    def devid(self) -> int | None:
        """The iommufd device id (iommufd mode), else None."""
        return self.device.devid if self.device is not None else None

    @property
    def iommufd(self) -> IommuFD | None:
        return getattr(self.backend, "iommufd", None)

    @property
    def ioas(self) -> IOAS | None:
        return getattr(self.backend, "ioas", None)

    @property
    def container(self) -> Container | None:
        return getattr(self.backend, "container", None)

    def describe(self) -> dict:
        """The mode and what it opened, for reports."""
        return {"device": self.pci.bdf, "iommu_mode": self.iommu_mode,
                "device_fd_from": self.device.path, "devid": self.devid,
                **{k: v for k, v in self.backend.describe().items() if k != "mode"}}

    def dma_info(self) -> dict:
        """The DMA space as the kernel reports it: usable IOVA ranges and alignment; on the
        container, the IOMMU page sizes and how many more mappings it takes (DMA_AVAIL)."""
        ranges, align = self.dma.iova_ranges()
        out = {"iova_ranges": [[r.start, r.last] for r in ranges], "iova_alignment": align}
        if self.container is not None:
            info = self.container.info()
            out.update(iova_pgsizes=info.pgsizes, dma_avail=info.dma_avail)
        return out

    def region(self, name: str | int) -> Region:
        return self.device.region(name)

    def driver(self):
        """The DMA driver for this device (vfioctl.drivers), initialised: it can memcpy between
        IOVAs and send an interrupt. One per session; closed with it. UsageError naming the
        devices that have one if this device has none."""
        if self._driver is None:
            from .drivers import require_driver

            drv = require_driver(self.pci)(self)
            try:
                drv.init()
            except BaseException:
                drv.close()
                raise
            self._driver = drv
        return self._driver

    def hot_reset(self) -> list[str]:
        """VFIO_DEVICE_PCI_HOT_RESET in this mode's form (group fds on the group path), after
        checking the topology allows it and this session owns every device it would reset.
        Returns the BDFs reset."""
        try:
            scope = self.device.hot_reset_info()
        except KernelError as exc:
            raise EnvironmentProblem(
                f"{self.pci.bdf} cannot be hot reset here: the topology gives no bus or slot "
                f"to reset ({errno_name(exc.errno)})", errno=exc.errno, op=exc.op,
                path=exc.path, hint="a device on a root bus has no secondary bus to reset; a "
                                    "function reset works if the device advertises RESET",
                fix="function-reset") from None
        if scope.uses_devid:
            owned = scope.all_owned
        else:  # the group path: every affected device's group must be one we hold open
            held = set(getattr(self.backend, "groups", ()))
            owned = all(d.devid in held for d in scope.devices)
        if not owned:
            others = ", ".join(d.bdf for d in scope.devices)
            raise EnvironmentProblem(
                f"a hot reset of {self.pci.bdf} also resets {others}, not all opened here",
                hint="bind every affected device to vfio-pci and open them in this process "
                     "first")
        self.device.hot_reset(self.backend.hot_reset_fds())
        return [d.bdf for d in scope.devices]

    def reset(self) -> None:
        """VFIO_DEVICE_RESET, if the device advertises it (a clear error if not)."""
        if not self.device.info().resettable:
            raise EnvironmentProblem(
                f"{self.pci.bdf} does not advertise VFIO_DEVICE_RESET (no FLR, PM or bus "
                "reset method)", hint="a hot reset may work if it sits behind a bridge; the "
                                      "device info shows the hot-reset scope", fix="hot-reset")
        self.device.reset()

    def dma_alloc(self, size: int, *, iova: int | None = None, readable: bool = True,
                  writable: bool = True, limit: int | None = None,
                  hugepages: str | None = None) -> DmaBuffer:
        """A zeroed buffer mapped for the device (at ``iova`` or a free one below ``limit``,
        e.g. a device's DMA mask). ``hugepages``: None (4 KiB pages), "thp" (transparent huge
        pages, advised), "2M" or "1G" (hugetlb pages from the host's reserved pool); the size
        is rounded up to the page size and a chosen IOVA is aligned to it. Unmapped and freed
        when the session closes."""
        mem = memory.alloc(size, hugepages)
        try:
            m = self.dma.map(mem, iova, readable=readable, writable=writable, limit=limit,
                             align=memory.page_size(hugepages))
        except BaseException:
            mem.close()  # map() released its export of mem before raising
            raise
        buf = DmaBuffer(m.iova, len(mem), mem, m, hugepages)
        self._dma.append(buf)
        return buf

    def dma_free(self, buf: DmaBuffer) -> None:
        if buf in self._dma:
            self._dma.remove(buf)
            if self.backend is not None and buf.iova in {m.iova for m in self.dma.mappings}:
                self.dma.unmap(buf.iova)
            try:
                buf.mem.close()
            except BufferError:
                pass

    def close(self) -> None:
        """Reverse order: DMA buffers, the device (IRQs, regions, detach), the backend. Every
        step runs even if an earlier one fails; the first failure is raised at the end."""
        if self.backend is None:  # closed already, or the backend never opened
            if self.device is not None:
                self.device.close()
            return
        first: BaseException | None = None
        drv, self._driver = self._driver, None
        if drv is not None:
            try:
                drv.close()
            except KernelError as exc:
                first = exc
        for buf in reversed(list(self._dma)):
            try:
                self.dma_free(buf)
            except KernelError as exc:
                first = first or exc
        if self.device is not None:
            try:
                self.backend.release_device(self.device)
            except KernelError as exc:
                first = first or exc
        backend, self.backend = self.backend, None
        try:
            backend.release()
        except KernelError as exc:
            first = first or exc
        if first is not None:
            raise first

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Session {self.pci.bdf} {self.iommu_mode}>"


#: ``vfioctl.open(DEVICE, *, iommu_mode=None, vf_token=None, share_with=None)``: DEVICE opened
#: in an IOMMU mode (``auto``: the cdev with iommufd where the kernel has it, else the group with
#: a type1v2 container), or in the DMA space of the session ``share_with``: a ready Session.
#: The class itself, not a function that calls it: a session open is one call (a wrapper's
#: keywords cost 1.9% of an open's instructions: 95771 against 93971, scripts/bench_instr.py).
open = Session  # noqa: A001
