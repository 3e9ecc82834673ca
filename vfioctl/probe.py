"""``vfioctl probe``: prove that a fresh device cdev refuses everything until
VFIO_DEVICE_BIND_IOMMUFD succeeds, and works after it.

Every check records the expected and the observed outcome as an errno name (``EINVAL``) or
``OK``. The probe reads; the only write is a write-back of the 2 bytes just read from the
config-space vendor ID, a read-only field vfio-pci drops writes to.
"""
from __future__ import annotations

import errno
import mmap as _mmap
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from . import uapi
from .device import Device
from .errors import EnvironmentProblem, KernelError, errno_name
from .iommufd import IOMMU_PATH, IommuFD
from . import ioctl as _seam
from .pci import PciDevice, require_cdev

#: an ioctl number VFIO does not define (';', 99)
UNKNOWN_IOCTL = uapi.vfio_io(99)


@dataclass(frozen=True)
class Check:
    name: str
    expected: str
    observed: str

    @property
    def ok(self) -> bool:
        return self.expected == self.observed

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


@dataclass
class ProbeReport:
    device: str
    cdev: str
    devid: int | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict:
        return {"device": self.device, "cdev": self.cdev, "devid": self.devid, "ok": self.ok,
                "checks": [c.to_dict() for c in self.checks]}


def _outcome(fn: Callable[[], object]) -> str:
    try:
        fn()
    except KernelError as exc:
        return errno_name(exc.errno)
    except OSError as exc:
        return errno_name(exc.errno)
    return "OK"


def _raw(fd: int, request: int, arg) -> Callable[[], object]:
    """The raw syscall through the seam: no argsz filling, so a probe can send bad ones."""
    def call():
        if isinstance(arg, int):
            return _seam._sys_ioctl(fd, request, arg)
        return _seam._sys_ioctl(fd, request, arg, True)
    return call


def _sized(struct_type, **kw):
    """A struct with its argsz/size filled, as the seam would, for the raw calls above."""
    s = struct_type(**kw)
    _seam._fill_size(s)
    return s


def _mmap_call(fd: int, offset: int, length: int) -> Callable[[], object]:
    def call():
        mm = _mmap.mmap(fd, length, _mmap.MAP_SHARED, _mmap.PROT_READ, offset=offset)
        mm.close()
    return call


def _closed_fd_number() -> int:
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    return fd


class _Probe:
    def __init__(self, pci: PciDevice, iommu_path: str):
        self.pci = pci
        self.cdev = str(require_cdev(pci))
        self.iommu_path = iommu_path
        self.report = ProbeReport(pci.bdf, self.cdev)

    def check(self, name: str, expected: str, fn: Callable[[], object]) -> str:
        observed = _outcome(fn)
        self.report.checks.append(Check(name, expected, observed))
        return observed

    def blocked(self, fd: int, phase: str) -> None:
        """Everything but BIND on a fresh (or unbound) cdev fd: EINVAL."""
        c = self.check
        c(f"{phase}: VFIO_DEVICE_GET_INFO", "EINVAL",
          _raw(fd, uapi.VFIO_DEVICE_GET_INFO, _sized(uapi.vfio_device_info)))
        c(f"{phase}: VFIO_DEVICE_GET_REGION_INFO(config)", "EINVAL",
          _raw(fd, uapi.VFIO_DEVICE_GET_REGION_INFO,
               _sized(uapi.vfio_region_info, index=uapi.VFIO_PCI_CONFIG_REGION_INDEX)))
        c(f"{phase}: VFIO_DEVICE_GET_IRQ_INFO(intx)", "EINVAL",
          _raw(fd, uapi.VFIO_DEVICE_GET_IRQ_INFO, _sized(uapi.vfio_irq_info, index=0)))
        c(f"{phase}: VFIO_DEVICE_RESET", "EINVAL", _raw(fd, uapi.VFIO_DEVICE_RESET, 0))
        c(f"{phase}: VFIO_DEVICE_FEATURE(probe)", "EINVAL",
          _raw(fd, uapi.VFIO_DEVICE_FEATURE, self._feature_probe()))
        c(f"{phase}: VFIO_DEVICE_ATTACH_IOMMUFD_PT", "EINVAL",
          _raw(fd, uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
               _sized(uapi.vfio_device_attach_iommufd_pt, pt_id=1)))
        c(f"{phase}: unknown ioctl", "EINVAL", _raw(fd, UNKNOWN_IOCTL, 0))
        cfg = uapi.VFIO_PCI_CONFIG_REGION_INDEX << 40
        c(f"{phase}: read", "EINVAL", lambda: os.read(fd, 4))
        c(f"{phase}: pread config+0", "EINVAL", lambda: os.pread(fd, 4, cfg))
        c(f"{phase}: write", "EINVAL", lambda: os.write(fd, b"\0\0\0\0"))
        c(f"{phase}: pwrite config+0", "EINVAL", lambda: os.pwrite(fd, b"\0\0", cfg))
        c(f"{phase}: mmap bar0", "EINVAL", _mmap_call(fd, 0, _mmap.PAGESIZE))

    @staticmethod
    def _feature_probe() -> uapi.vfio_device_feature:
        return _sized(uapi.vfio_device_feature,
                      flags=uapi.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY
                      | uapi.VFIO_DEVICE_FEATURE_PROBE | uapi.VFIO_DEVICE_FEATURE_SET)

    def bind_negatives(self, fd: int, iommufd: int) -> None:
        c = self.check
        B = uapi.vfio_device_bind_iommufd
        bind = uapi.VFIO_DEVICE_BIND_IOMMUFD
        c("BIND iommufd=-1", "EINVAL", _raw(fd, bind, _sized(B, iommufd=-1)))
        c("BIND closed fd number", "EBADF", _raw(fd, bind, _sized(B, iommufd=_closed_fd_number())))
        null = os.open("/dev/null", os.O_RDWR)
        try:
            c("BIND fd of /dev/null", "EBADFD", _raw(fd, bind, _sized(B, iommufd=null)))
        finally:
            os.close(null)
        # a flag no kernel defines (bit 0 is VFIO_DEVICE_BIND_FLAG_TOKEN on 7.x kernels, EINVAL on 6.12)
        c("BIND flags=1<<31 (undefined)", "EINVAL",
          _raw(fd, bind, _sized(B, iommufd=iommufd, flags=1 << 31)))
        short = B(argsz=8, iommufd=iommufd)
        c("BIND argsz=8 (too small)", "EINVAL", _raw(fd, bind, short))

    def run(self) -> ProbeReport:
        c = self.check
        dev = Device(self.cdev, bdf=self.pci.bdf)
        iommufd = IommuFD(self.iommu_path)
        second = None
        try:
            self.blocked(dev.fd, "before bind")
            self.bind_negatives(dev.fd, iommufd.fd)
            self.blocked(dev.fd, "after failed binds")

            if c("BIND /dev/iommu", "OK", lambda: dev.bind(iommufd)) != "OK":
                return self.report
            self.report.devid = dev.devid
            B = uapi.vfio_device_bind_iommufd
            c("BIND again on the same fd", "EINVAL",
              _raw(dev.fd, uapi.VFIO_DEVICE_BIND_IOMMUFD, _sized(B, iommufd=iommufd.fd)))
            second = Device(self.cdev, bdf=self.pci.bdf)
            c("BIND a second fd of the cdev", "EINVAL",
              _raw(second.fd, uapi.VFIO_DEVICE_BIND_IOMMUFD, _sized(B, iommufd=iommufd.fd)))
            second.close()
            group = self.pci.iommu_group
            c(f"open /dev/vfio/{group} (legacy group)", "EBUSY",
              lambda: os.close(os.open(f"/dev/vfio/{group}", os.O_RDWR)))

            self.after_bind(dev, iommufd)
        finally:
            if second is not None:
                second.close()
            dev.close()
            iommufd.close()
        return self.report

    def after_bind(self, dev: Device, iommufd: IommuFD) -> None:
        c = self.check
        fd = dev.fd
        c("after bind: VFIO_DEVICE_GET_INFO", "OK", dev.info)
        info = dev.info()
        c("after bind: VFIO_DEVICE_GET_REGION_INFO(config)", "OK", lambda: dev.region_info("config"))
        c("after bind: VFIO_DEVICE_GET_IRQ_INFO(intx)", "OK", lambda: dev.irq_info(0))
        # a device that does not advertise reset answers EINVAL; resetting one that does is
        # what vfio-pci already did when the device was opened
        c("after bind: VFIO_DEVICE_RESET", "OK" if info.resettable else "EINVAL", dev.reset)
        c("after bind: VFIO_DEVICE_FEATURE(probe)", "OK",
          _raw(fd, uapi.VFIO_DEVICE_FEATURE, self._feature_probe()))
        c("after bind: unknown ioctl", "ENOTTY", _raw(fd, UNKNOWN_IOCTL, 0))
        ioas = iommufd.alloc_ioas()
        c("after bind: IOMMU_IOAS_ALLOC + VFIO_DEVICE_ATTACH_IOMMUFD_PT", "OK",
          lambda: dev.attach(ioas))
        cfg = dev.region("config")
        c("after bind: pread config+0", "OK", lambda: cfg.read(0, 4))
        vendor = cfg.read_bytes(0, 2)
        c("after bind: pwrite config+0 (vendor ID written back)", "OK",
          lambda: cfg.write_bytes(0, vendor))
        bar = next((r for r in dev.regions() if r.index <= 5 and r.mappable), None)
        if bar is not None:
            area = bar.mmap_areas()[0]
            c(f"after bind: mmap {bar.name}", "OK",
              _mmap_call(fd, bar.offset + area.offset, min(area.size, _mmap.PAGESIZE)))
        ids = f"{cfg.read(0, 2):04x}:{cfg.read(2, 2):04x}"
        self.report.checks.append(Check("config vendor:device equals sysfs", self.pci.ids, ids))
        if dev.attached_pt is not None:
            dev.detach()
        ioas.close()


def probe(pci: PciDevice, iommu_path: str = IOMMU_PATH) -> ProbeReport:
    """Run every check on ``pci`` (bound to vfio-pci, not open elsewhere)."""
    try:
        return _Probe(pci, iommu_path).run()
    except KernelError as exc:
        if exc.errno == errno.EBUSY:
            raise EnvironmentProblem(f"{pci.bdf} is in use by another process ({exc})",
                                     errno=exc.errno, op=exc.op, path=exc.path,
                                     hint="close the other user of the device and run again"
                                     ) from None
        raise
