"""``vfioctl probe``: prove the kernel's access rules for a device, in its IOMMU mode.

- ``iommufd`` (the cdev): a fresh cdev refuses everything until VFIO_DEVICE_BIND_IOMMUFD
  succeeds, and works after it; a bound fd stays bound (after DETACH, until close).
- the group path (the four container modes): the legacy ordering rules, each with the errno the
  kernel answers (GROUP_CHECKS says which kernel function decides it).

Every check records the expected and the observed outcome as an errno name (``EINVAL``) or
``OK``.

What the probe touches, and why it is harmless even if the kernel's block were broken: it reads
config space and info; its only writes put the vendor ID that sysfs reports back into the
vendor-ID field of config space (before BIND, where the write must be refused; after BIND, the
two bytes just read), a field vfio-pci virtualises read-only, with the value it already holds.
read(2)/write(2) would go to BAR0 offset 0 (the fd cannot seek), a device register, so the
blocked read/write checks use pread/pwrite at config+0 (the same vfio read/write entry points).
mmap maps one page and unmaps it without touching it. VFIO_DEVICE_RESET is issued only when
asked (``reset=True``). vfio-pci itself may reset the device when it is opened, as for any user.
"""
from __future__ import annotations

import errno
import mmap as _mmap
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import ctypes

from . import uapi
from .backend import _GROUP_MODES, AUTO, choose_mode, requested_mode
from .container import iommu_type
from .device import Device, uuid_bytes
from .errors import EnvironmentProblem, KernelError, errno_name
from .iommufd import IOMMU_PATH, IommuFD
from .ioctl import _fill_size, try_ioctl
from .kernel import cdev_missing, kernel_caps
from .pci import PciDevice, require_cdev, require_vfio_pci
from .session import check_vf_token

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
    cdev: str | None
    iommu_mode: str = "iommufd"
    devid: int | None = None
    notes: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict:
        return {"device": self.device, "iommu_mode": self.iommu_mode, "cdev": self.cdev,
                "devid": self.devid, "notes": self.notes, "ok": self.ok,
                "checks": [c.to_dict() for c in self.checks]}


def _outcome(fn: Callable[[], object]) -> str:
    """``OK`` or the errno name: of an exception, or of a seam result ``-errno``."""
    try:
        ret = fn()
    except (KernelError, OSError) as exc:
        return errno_name(exc.errno)
    return errno_name(-ret) if isinstance(ret, int) and ret < 0 else "OK"


def _raw(fd: int, request: int, arg) -> Callable[[], int]:
    """The seam's non-raising form, struct sent exactly as given (a probe sends bad argsz)."""
    return lambda: try_ioctl(fd, request, arg, fill=False)


def _sized(struct_type, **kw):
    """A struct with its argsz/size filled, as the seam would, for the raw calls above."""
    s = struct_type(**kw)
    _fill_size(s)
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


class _Checks:
    report: ProbeReport

    def check(self, name: str, expected: str, fn: Callable[[], object]) -> str:
        observed = _outcome(fn)
        self.report.checks.append(Check(name, expected, observed))
        return observed

    def same(self, name: str, expected: str, observed: str) -> None:
        self.report.checks.append(Check(name, expected, observed))


def _pf_on_vfio(pci: PciDevice) -> PciDevice | None:
    """The PF of a VF whose PF is on vfio-pci (the kernel then wants the PF's VF token)."""
    pf = pci.physfn
    return pf if pf is not None and pf.driver == "vfio-pci" else None


#: a token no PF holds (the kernel never hands a token back, so no PF can have chosen it
#: knowingly; the odds of a PF holding it by chance are those of a UUID collision)
WRONG_TOKEN = "00000000-dead-4bad-8bad-000000000000"
NEED_TOKEN = ("{bdf} is a VF of {pf}, which is on vfio-pci: without its VF token the checks "
              "after the device is opened cannot run")


class _CdevProbe(_Checks):
    def __init__(self, pci: PciDevice, iommu_path: str, reset: bool = False,
                 vf_token: str | None = None):
        self.pci = pci
        self.vf_token = vf_token
        self.token_buf = None  # the token BIND takes, once known to be wanted and understood
        self.cdev = str(require_cdev(pci))
        self.iommu_path = iommu_path
        self.reset = reset
        self.vendor = pci.vendor.to_bytes(2, "little")  # what config+0 holds, per sysfs
        self.report = ProbeReport(pci.bdf, self.cdev)

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
        if self.reset:
            c(f"{phase}: VFIO_DEVICE_RESET", "EINVAL", _raw(fd, uapi.VFIO_DEVICE_RESET, 0))
        c(f"{phase}: VFIO_DEVICE_FEATURE(probe)", "EINVAL",
          _raw(fd, uapi.VFIO_DEVICE_FEATURE, self._feature_probe()))
        c(f"{phase}: VFIO_DEVICE_ATTACH_IOMMUFD_PT", "EINVAL",
          _raw(fd, uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
               _sized(uapi.vfio_device_attach_iommufd_pt, pt_id=1)))
        c(f"{phase}: unknown ioctl", "EINVAL", _raw(fd, UNKNOWN_IOCTL, 0))
        cfg = uapi.VFIO_PCI_CONFIG_REGION_INDEX << 40
        c(f"{phase}: pread config+0", "EINVAL", lambda: os.pread(fd, 4, cfg))
        c(f"{phase}: pwrite config+0 (the vendor ID it holds)", "EINVAL",
          lambda: os.pwrite(fd, self.vendor, cfg))
        c(f"{phase}: mmap bar0", "EINVAL", _mmap_call(fd, 0, _mmap.PAGESIZE))

    @staticmethod
    def _feature_probe() -> uapi.vfio_device_feature:
        return _sized(uapi.vfio_device_feature,
                      flags=uapi.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY
                      | uapi.VFIO_DEVICE_FEATURE_PROBE | uapi.VFIO_DEVICE_FEATURE_SET)

    def _bind_arg(self, iommufd: int):
        """A BIND argument, with the VF token where the probe has one to give (7.x's kernel
        matches the token before it looks at the iommufd)."""
        arg = _sized(uapi.vfio_device_bind_iommufd, iommufd=iommufd)
        if self.token_buf is not None:
            arg.flags = uapi.VFIO_DEVICE_BIND_FLAG_TOKEN
            arg.token_uuid_ptr = ctypes.addressof(self.token_buf)
        return arg

    def bind_negatives(self, fd: int, iommufd: int) -> None:
        c = self.check
        B = uapi.vfio_device_bind_iommufd
        bind = uapi.VFIO_DEVICE_BIND_IOMMUFD
        c("BIND iommufd=-1", "EINVAL", _raw(fd, bind, _sized(B, iommufd=-1)))
        c("BIND closed fd number", "EBADF",
          _raw(fd, bind, self._bind_arg(_closed_fd_number())))
        null = os.open("/dev/null", os.O_RDWR)
        try:
            c("BIND fd of /dev/null", "EBADFD", _raw(fd, bind, self._bind_arg(null)))
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
            pf = _pf_on_vfio(self.pci)
            if pf is not None and not self.token_rows(dev, iommufd, pf):
                return self.report
            self.bind_negatives(dev.fd, iommufd.fd)
            self.blocked(dev.fd, "after failed binds")

            if c("BIND /dev/iommu", "OK",
                 lambda: dev.bind(iommufd, vf_token=self.vf_token if pf else None)) != "OK":
                return self.report
            self.report.devid = dev.devid
            B = uapi.vfio_device_bind_iommufd
            c("BIND again on the same fd", "EINVAL",
              _raw(dev.fd, uapi.VFIO_DEVICE_BIND_IOMMUFD, _sized(B, iommufd=iommufd.fd)))
            second = Device(self.cdev, bdf=self.pci.bdf)
            c("BIND a second fd of the cdev", "EINVAL",
              _raw(second.fd, uapi.VFIO_DEVICE_BIND_IOMMUFD, self._bind_arg(iommufd.fd)))
            second.close()
            group = self.pci.iommu_group
            c(f"open /dev/vfio/{group} (legacy group)", "EBUSY",
              lambda: os.close(os.open(f"/dev/vfio/{group}", os.O_RDWR)))

            self.after_bind(dev, iommufd)
            self.stays_bound(dev, iommufd)
        finally:
            if second is not None:
                second.close()
            dev.close()
            iommufd.close()
        self.reopened_is_blocked()
        return self.report

    def token_rows(self, dev: Device, iommufd: IommuFD, pf: PciDevice) -> bool:
        """The VF-token rows of a VF whose PF is on vfio-pci; whether the probe can go on.

        Where BIND knows VFIO_DEVICE_BIND_FLAG_TOKEN (7.x) a missing or wrong token is EACCES;
        where it does not (6.12), a token is EINVAL and none is asked for (measured: 6.12's cdev
        opens such a VF without one)."""
        c = self.check
        B = uapi.vfio_device_bind_iommufd
        tok = ctypes.create_string_buffer(uuid_bytes(WRONG_TOKEN), 16)
        wrong = _sized(B, iommufd=iommufd.fd, flags=uapi.VFIO_DEVICE_BIND_FLAG_TOKEN,
                       token_uuid_ptr=ctypes.addressof(tok))
        if not dev._knows_token_flag(iommufd.fd):
            c(f"BIND with a VF token (PF {pf.bdf} on vfio-pci; no token flag here)", "EINVAL",
              _raw(dev.fd, uapi.VFIO_DEVICE_BIND_IOMMUFD, wrong))
            self.vf_token = None
            self.report.notes.append(
                f"this kernel's cdev takes no VF token and checks none: {self.pci.bdf} opens "
                f"without the token of its PF {pf.bdf}")
            return True
        c(f"BIND without the VF token (PF {pf.bdf} on vfio-pci)", "EACCES",
          _raw(dev.fd, uapi.VFIO_DEVICE_BIND_IOMMUFD, _sized(B, iommufd=iommufd.fd)))
        c("BIND with a wrong VF token", "EACCES",
          _raw(dev.fd, uapi.VFIO_DEVICE_BIND_IOMMUFD, wrong))
        if self.vf_token is None:
            self.report.notes.append(NEED_TOKEN.format(bdf=self.pci.bdf, pf=pf.bdf))
            return False
        self.token_buf = ctypes.create_string_buffer(uuid_bytes(self.vf_token), 16)
        return True

    def stays_bound(self, dev: Device, iommufd: IommuFD) -> None:
        """Bound -> unbound is not supported: after DETACH the fd stays bound (the kernel's
        access_granted flag is only cleared when the file is released)."""
        c = self.check
        c("after DETACH: VFIO_DEVICE_GET_INFO (still bound)", "OK",
          _raw(dev.fd, uapi.VFIO_DEVICE_GET_INFO, _sized(uapi.vfio_device_info)))
        c("after DETACH: BIND again", "EINVAL",
          _raw(dev.fd, uapi.VFIO_DEVICE_BIND_IOMMUFD,
               _sized(uapi.vfio_device_bind_iommufd, iommufd=iommufd.fd)))

    def reopened_is_blocked(self) -> None:
        """After close, a new open of the cdev starts blocked again, and binds again."""
        c = self.check
        with Device(self.cdev, bdf=self.pci.bdf) as dev, IommuFD(self.iommu_path) as iommufd:
            c("reopened: VFIO_DEVICE_GET_INFO", "EINVAL",
              _raw(dev.fd, uapi.VFIO_DEVICE_GET_INFO, _sized(uapi.vfio_device_info)))
            c("reopened: pread config+0", "EINVAL",
              lambda: os.pread(dev.fd, 4, uapi.VFIO_PCI_CONFIG_REGION_INDEX << 40))
            token = self.vf_token if _pf_on_vfio(self.pci) else None
            c("reopened: BIND /dev/iommu", "OK", lambda: dev.bind(iommufd, vf_token=token))

    def after_bind(self, dev: Device, iommufd: IommuFD) -> None:
        c = self.check
        fd = dev.fd
        c("after bind: VFIO_DEVICE_GET_INFO", "OK", dev.info)
        info = dev.info()
        c("after bind: VFIO_DEVICE_GET_REGION_INFO(config)", "OK", lambda: dev.region_info("config"))
        c("after bind: VFIO_DEVICE_GET_IRQ_INFO(intx)", "OK", lambda: dev.irq_info(0))
        # a device that does not advertise reset answers EINVAL; resetting one that does is
        # what vfio-pci already did when the device was opened
        if self.reset:
            c("after bind: VFIO_DEVICE_RESET", "OK" if info.resettable else "EINVAL", dev.reset)
        c("after bind: VFIO_DEVICE_FEATURE(probe)", "OK",
          _raw(fd, uapi.VFIO_DEVICE_FEATURE, self._feature_probe()))
        c("after bind: unknown ioctl", "ENOTTY", _raw(fd, UNKNOWN_IOCTL, 0))
        # the kernel selftest's attach_invalid_pt_fails: no object has that id
        c("after bind: VFIO_DEVICE_ATTACH_IOMMUFD_PT pt_id=0xffffffff (no such object)",
          "ENOENT", _raw(fd, uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                         _sized(uapi.vfio_device_attach_iommufd_pt, pt_id=0xFFFFFFFF)))
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
        c("after bind: VFIO_DEVICE_DETACH_IOMMUFD_PT", "OK", dev.detach)
        ioas.close()


#: The group path's rules: check -> {container kind: expected}, with the kernel function that
#: decides it (drivers/vfio/group.c and container.c for VFIO's own container,
#: drivers/iommu/iommufd/vfio_compat.c for iommufd's), as measured on the bed's 6.12, 7.3 and
#: Debian 13 kernels (README, test-bed facts).
GROUP_CHECKS: dict[str, tuple[dict[str, str], str]] = {
    "open the group node a second time":
        ({"legacy": "EBUSY", "iommufd": "EBUSY"}, "group.c vfio_group_fops_open (opened_file)"),
    "VFIO_GROUP_GET_DEVICE_FD before the group has a container":
        ({"legacy": "EINVAL", "iommufd": "EINVAL"},
         "group.c vfio_df_group_open (!vfio_group_has_iommu)"),
    "VFIO_SET_IOMMU before a group is set to the container":
        ({"legacy": "EINVAL", "iommufd": "ENODEV"},
         "container.c vfio_ioctl_set_iommu (empty group_list) / vfio_compat.c "
         "iommufd_vfio_set_iommu (get_compat_ioas: no IOAS before a group joins)"),
    "VFIO_IOMMU_MAP_DMA before VFIO_SET_IOMMU":
        ({"legacy": "EINVAL", "iommufd": "ENODEV"},
         "container.c vfio_fops_unl_ioctl (no iommu_driver) / vfio_compat.c "
         "iommufd_vfio_map_dma (no compat IOAS)"),
    "VFIO_GROUP_SET_CONTAINER with an fd of /dev/null":
        ({"legacy": "EBADFD", "iommufd": "EBADFD"},
         "group.c vfio_group_ioctl_set_container (neither container nor iommufd)"),
    "VFIO_GROUP_SET_CONTAINER with a closed fd number":
        ({"legacy": "EBADF", "iommufd": "EBADF"}, "group.c vfio_group_ioctl_set_container"),
    "VFIO_GROUP_SET_CONTAINER":
        ({"legacy": "OK", "iommufd": "OK"}, ""),
    "VFIO_GROUP_SET_CONTAINER a second time":
        ({"legacy": "EINVAL", "iommufd": "EINVAL"},
         "group.c vfio_group_ioctl_set_container (vfio_group_has_iommu)"),
    "VFIO_GROUP_GET_DEVICE_FD before VFIO_SET_IOMMU":
        ({"legacy": "EINVAL", "iommufd": "OK"},
         "container.c vfio_group_use_container (no iommu_driver); iommufd needs no type"),
    "VFIO_SET_IOMMU":
        ({"legacy": "OK", "iommufd": "OK"}, ""),
    "VFIO_SET_IOMMU a second time":
        ({"legacy": "EINVAL", "iommufd": "OK"},
         "container.c vfio_ioctl_set_iommu (iommu_driver set) / vfio_compat.c "
         "iommufd_vfio_set_iommu (sets the compat IOAS's type again)"),
    "VFIO_GROUP_GET_DEVICE_FD of a name not in the group":
        ({"legacy": "ENODEV", "iommufd": "ENODEV"}, "group.c vfio_device_get_from_name"),
    "VFIO_GROUP_GET_DEVICE_FD":
        ({"legacy": "OK", "iommufd": "OK"}, ""),
    "VFIO_GROUP_UNSET_CONTAINER while a device fd is open":
        ({"legacy": "EBUSY", "iommufd": "OK"},
         "group.c vfio_group_ioctl_unset_container: container_users is checked for VFIO's own "
         "container only; an iommufd is dropped at once"),
    "VFIO_GROUP_UNSET_CONTAINER after the device fd closed":
        ({"legacy": "OK", "iommufd": "EINVAL"},
         "group.c vfio_group_ioctl_unset_container (iommufd: already unset above)"),
    "VFIO_GROUP_GET_DEVICE_FD after VFIO_GROUP_UNSET_CONTAINER":
        ({"legacy": "EINVAL", "iommufd": "EINVAL"},
         "group.c vfio_df_group_open (!vfio_group_has_iommu)"),
}


class _GroupProbe(_Checks):
    """The legacy ordering rules on the group node and the container, then the device fd the
    group hands out works (info, config reads) and is no cdev."""

    def __init__(self, pci: PciDevice, mode: str, vf_token: str | None = None):
        require_vfio_pci(pci)
        self.pci = pci
        self.vf_token = vf_token
        self.mode = mode
        self.kind, type_name = _GROUP_MODES[mode]
        self.type = iommu_type(type_name)
        self.group = pci.iommu_group
        self.caps = kernel_caps(pci.sysfs, pci.devfs)
        self.report = ProbeReport(pci.bdf, None, mode)
        self.fds: list[int] = []

    def rule(self, name: str, fn: Callable[[], object]) -> str:
        return self.check(name, GROUP_CHECKS[name][0][self.kind], fn)

    def _open(self, path: str) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self.fds.append(fd)
        return fd

    def _close(self, fd: int) -> None:
        if fd in self.fds:
            self.fds.remove(fd)
            os.close(fd)

    def run(self) -> ProbeReport:
        try:
            self._run()
        finally:
            for fd in reversed(self.fds):
                os.close(fd)
            self.fds.clear()
        return self.report

    def _run(self) -> None:
        r, c = self.rule, self.check
        devfs = self.pci.devfs
        gpath = f"{devfs}/vfio/{self.group}"
        try:
            g = self._open(gpath)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise EnvironmentProblem(
                    f"VFIO group {self.group} of {self.pci.bdf} is open elsewhere ({gpath}: "
                    "EBUSY)", errno=exc.errno, op="open", path=gpath,
                    hint="close the other user of the group (or of a device cdev in it) and "
                         "run again") from None
            raise KernelError("open", exc.errno, gpath) from None
        self.same("open the group node", "OK", "OK")
        r("open the group node a second time", lambda: self._close(self._open(gpath)))
        status = _sized(uapi.vfio_group_status)
        c("VFIO_GROUP_GET_STATUS", "OK", _raw(g, uapi.VFIO_GROUP_GET_STATUS, status))
        self.same("group flags before SET_CONTAINER", "VIABLE", self._flags(status.flags))
        name = ctypes.create_string_buffer(self.pci.bdf.encode())
        pf = _pf_on_vfio(self.pci)
        if pf is not None:  # the kernel matches the name (and token) before anything else
            self.token_rows(g, pf)
            if self.vf_token is None:
                self.report.notes.append(NEED_TOKEN.format(bdf=self.pci.bdf, pf=pf.bdf))
                return
            name = ctypes.create_string_buffer(f"{self.pci.bdf} vf_token={self.vf_token}"
                                               .encode())
        get_fd = lambda: self._device_fd(g, name)  # noqa: E731
        r("VFIO_GROUP_GET_DEVICE_FD before the group has a container", get_fd)

        cont = self._open(f"{devfs}/vfio/vfio")
        self.same("VFIO_GET_API_VERSION", str(uapi.VFIO_API_VERSION),
                  str(try_ioctl(cont, uapi.VFIO_GET_API_VERSION, 0)))
        self.same(f"VFIO_CHECK_EXTENSION({self._type_name()})", "1",
                  str(try_ioctl(cont, uapi.VFIO_CHECK_EXTENSION, self.type)))
        r("VFIO_SET_IOMMU before a group is set to the container",
          _raw(cont, uapi.VFIO_SET_IOMMU, self.type))
        buf = _mmap.mmap(-1, _mmap.PAGESIZE)
        try:
            keep = (ctypes.c_char * _mmap.PAGESIZE).from_buffer(buf)
            dma = _sized(uapi.vfio_iommu_type1_dma_map, vaddr=ctypes.addressof(keep),
                         iova=1 << 20, size=_mmap.PAGESIZE,
                         flags=uapi.VFIO_DMA_MAP_FLAG_READ | uapi.VFIO_DMA_MAP_FLAG_WRITE)
            r("VFIO_IOMMU_MAP_DMA before VFIO_SET_IOMMU", _raw(cont, uapi.VFIO_IOMMU_MAP_DMA, dma))
            del keep
        finally:
            buf.close()
        null = self._open("/dev/null")
        r("VFIO_GROUP_SET_CONTAINER with an fd of /dev/null",
          _raw(g, uapi.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(null)))
        self._close(null)
        r("VFIO_GROUP_SET_CONTAINER with a closed fd number",
          _raw(g, uapi.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(_closed_fd_number())))
        if r("VFIO_GROUP_SET_CONTAINER",
             _raw(g, uapi.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(cont))) != "OK":
            return
        status = _sized(uapi.vfio_group_status)
        try_ioctl(g, uapi.VFIO_GROUP_GET_STATUS, status, fill=False)
        self.same("group flags after SET_CONTAINER", "VIABLE|CONTAINER_SET",
                  self._flags(status.flags))
        r("VFIO_GROUP_SET_CONTAINER a second time",
          _raw(g, uapi.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(cont)))
        early = self._device_fd(g, name)
        self.same("VFIO_GROUP_GET_DEVICE_FD before VFIO_SET_IOMMU",
                  GROUP_CHECKS["VFIO_GROUP_GET_DEVICE_FD before VFIO_SET_IOMMU"][0][self.kind],
                  _outcome(lambda: early))
        if early >= 0:
            self._close(early)
        if r("VFIO_SET_IOMMU", _raw(cont, uapi.VFIO_SET_IOMMU, self.type)) != "OK":
            return
        r("VFIO_SET_IOMMU a second time", _raw(cont, uapi.VFIO_SET_IOMMU, self.type))
        r("VFIO_GROUP_GET_DEVICE_FD of a name not in the group",
          lambda: self._device_fd(g, ctypes.create_string_buffer(b"0000:ff:1f.7")))
        dev = self._device_fd(g, name)
        self.same("VFIO_GROUP_GET_DEVICE_FD", "OK", _outcome(lambda: dev))
        if dev < 0:
            return
        self.device_works(dev)
        r("VFIO_GROUP_UNSET_CONTAINER while a device fd is open",
          _raw(g, uapi.VFIO_GROUP_UNSET_CONTAINER, 0))
        self._close(dev)
        r("VFIO_GROUP_UNSET_CONTAINER after the device fd closed",
          _raw(g, uapi.VFIO_GROUP_UNSET_CONTAINER, 0))
        r("VFIO_GROUP_GET_DEVICE_FD after VFIO_GROUP_UNSET_CONTAINER", get_fd)

    def token_rows(self, g: int, pf: PciDevice) -> None:
        """A VF whose PF is on vfio-pci: its name alone, or with a wrong token, is EACCES."""
        bdf = self.pci.bdf
        self.check(f"VFIO_GROUP_GET_DEVICE_FD without the VF token (PF {pf.bdf} on vfio-pci)",
                   "EACCES",
                   lambda: self._device_fd(g, ctypes.create_string_buffer(bdf.encode())))
        self.check("VFIO_GROUP_GET_DEVICE_FD with a wrong VF token", "EACCES",
                   lambda: self._device_fd(g, ctypes.create_string_buffer(
                       f"{bdf} vf_token={WRONG_TOKEN}".encode())))

    def device_works(self, fd: int) -> None:
        c = self.check
        info = _sized(uapi.vfio_device_info)
        c("device fd: VFIO_DEVICE_GET_INFO", "OK", _raw(fd, uapi.VFIO_DEVICE_GET_INFO, info))
        self.same("device fd: flags include PCI", "PCI",
                  "PCI" if info.flags & uapi.VFIO_DEVICE_FLAGS_PCI else f"{info.flags:#x}")
        cfg = uapi.VFIO_PCI_CONFIG_REGION_INDEX << 40
        ids = "?"
        try:
            raw = os.pread(fd, 4, cfg)
            ids = f"{int.from_bytes(raw[:2], 'little'):04x}:{int.from_bytes(raw[2:], 'little'):04x}"
        except OSError as exc:
            ids = errno_name(exc.errno)
        self.same("device fd: config vendor:device equals sysfs", self.pci.ids, ids)
        c("device fd: unknown ioctl", "ENOTTY", _raw(fd, UNKNOWN_IOCTL, 0))
        if self.caps.cdev_usable:
            # the device is the group's now: its cdev cannot be bound beside it
            node = self.pci.cdev_path
            if node is not None:
                cdev = self._open(str(node))
                iommu = self._open(IOMMU_PATH)
                c("the device's cdev: BIND while the group holds the device", "EBUSY",
                  _raw(cdev, uapi.VFIO_DEVICE_BIND_IOMMUFD,
                       _sized(uapi.vfio_device_bind_iommufd, iommufd=iommu)))
                self._close(iommu)
                self._close(cdev)

    def _device_fd(self, group_fd: int, name) -> int:
        fd = try_ioctl(group_fd, uapi.VFIO_GROUP_GET_DEVICE_FD, name)
        if fd >= 0:
            self.fds.append(fd)
        return fd

    def _type_name(self) -> str:
        return "VFIO_TYPE1v2_IOMMU" if self.type == uapi.VFIO_TYPE1v2_IOMMU else "VFIO_TYPE1_IOMMU"

    @staticmethod
    def _flags(flags: int) -> str:
        names = [n for bit, n in ((uapi.VFIO_GROUP_FLAGS_VIABLE, "VIABLE"),
                                  (uapi.VFIO_GROUP_FLAGS_CONTAINER_SET, "CONTAINER_SET"))
                 if flags & bit]
        return "|".join(names) or "none"


def probe(pci: PciDevice, iommu_mode: str | None = None, iommu_path: str = IOMMU_PATH,
          reset: bool = False, vf_token: str | None = None) -> ProbeReport:
    """Run every check on ``pci`` (bound to vfio-pci, not open elsewhere) in ``iommu_mode``.

    ``auto`` (the default) probes the cdev where the kernel has it, else the group path; then
    the report's notes say why the cdev checks could not run. For a VF whose PF is on vfio-pci
    it adds the VF-token rows (none, wrong); ``vf_token`` (the PF's) lets it go past them."""
    auto = requested_mode(iommu_mode) == AUTO  # a mode that is no mode, before the device
    require_vfio_pci(pci)
    if vf_token is not None:
        check_vf_token(pci, vf_token)
    caps = kernel_caps(pci.sysfs, pci.devfs)
    mode = "iommufd" if auto and caps.cdev_usable else choose_mode(iommu_mode, pci, caps)
    try:
        if mode == "iommufd":
            return _CdevProbe(pci, iommu_path, reset, vf_token).run()
        report = _GroupProbe(pci, mode, vf_token).run()
        if auto:
            report.notes.append(f"the cdev checks could not run: {cdev_missing(caps)}; "
                                f"probed the group path ({mode}) instead")
        return report
    except KernelError as exc:
        if exc.errno == errno.EBUSY:
            raise EnvironmentProblem(f"{pci.bdf} is in use by another process ({exc})",
                                     errno=exc.errno, op=exc.op, path=exc.path,
                                     hint="close the other user of the device and run again"
                                     ) from None
        raise


# --- the access_granted race -----------------------------------------------------------------
@dataclass
class RaceReport:
    """``vfioctl probe --race``: outcomes of accesses racing VFIO_DEVICE_BIND_IOMMUFD.

    ``counts`` maps (phase, operation, outcome) to how many times it was seen; the phases are
    ``before`` (finished before BIND was issued), ``during`` (overlapping it) and ``after``
    (started after BIND returned). ``violations`` lists what the kernel's rule forbids: an
    access that succeeded before BIND was issued, one that failed with EINVAL after BIND
    returned, or a successful one that saw a device not fully opened (info not sane, config IDs
    not equal to sysfs).
    """

    device: str
    rounds: int = 0
    workers: int = 0
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rounds > 0 and not self.violations

    def to_dict(self) -> dict:
        return {"device": self.device, "rounds": self.rounds, "workers": self.workers,
                "ok": self.ok, "violations": self.violations[:50],
                "counts": [{"phase": p, "op": o, "outcome": r, "count": n}
                           for (p, o, r), n in sorted(self.counts.items())]}


def race(pci: PciDevice, seconds: float = 3.0, workers: int = 3,
         iommu_path: str = IOMMU_PATH) -> RaceReport:
    """Hammer fresh cdev fds with GET_INFO, config pread and mmap from ``workers`` threads
    (ioctl, pread and mmap release the GIL: they really run in the kernel at once) while the
    main thread binds; round after round for ``seconds``."""
    import threading
    import time

    cdev = str(require_cdev(pci))
    want_ids = pci.ids
    report = RaceReport(pci.bdf, workers=workers)
    cfg_off = uapi.VFIO_PCI_CONFIG_REGION_INDEX << 40
    deadline = time.monotonic() + seconds

    def attempt(fd: int, op: str) -> tuple[str, str | None]:
        """(outcome, what a successful access saw that is wrong, if anything)."""
        try:
            if op == "GET_INFO":
                info = _sized(uapi.vfio_device_info)
                ret = try_ioctl(fd, uapi.VFIO_DEVICE_GET_INFO, info, fill=False)
                if ret < 0:
                    return errno_name(-ret), None
                sane = (info.flags & uapi.VFIO_DEVICE_FLAGS_PCI
                        and info.num_regions == uapi.VFIO_PCI_NUM_REGIONS)
                return "OK", None if sane else f"GET_INFO saw flags {info.flags:#x}, " \
                                               f"{info.num_regions} regions"
            if op == "pread config":
                raw = os.pread(fd, 4, cfg_off)
                ids = f"{int.from_bytes(raw[:2], 'little'):04x}:" \
                      f"{int.from_bytes(raw[2:], 'little'):04x}"
                return "OK", None if ids == want_ids else f"config IDs {ids}, sysfs {want_ids}"
            mm = _mmap.mmap(fd, _mmap.PAGESIZE, _mmap.MAP_SHARED, _mmap.PROT_READ, offset=0)
            mm.close()
            return "OK", None
        except OSError as exc:
            return errno_name(exc.errno), None

    ops = ("GET_INFO", "pread config", "mmap bar0")
    with IommuFD(iommu_path) as iommufd:
        while time.monotonic() < deadline:
            dev = Device(cdev, bdf=pci.bdf)
            marks = {"issued": None, "returned": None}
            results: list[tuple[float, float, str, str, str | None]] = []
            lock = threading.Lock()
            stop = threading.Event()
            go = threading.Barrier(workers + 1)

            def worker(k: int) -> None:
                go.wait()
                i = k
                while not stop.is_set():
                    op = ops[i % len(ops)]
                    i += 1
                    t0 = time.monotonic()
                    outcome, wrong = attempt(dev.fd, op)
                    with lock:
                        results.append((t0, time.monotonic(), op, outcome, wrong))

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(workers)]
            for t in threads:
                t.start()
            try:
                go.wait()
                time.sleep(0.002)
                marks["issued"] = time.monotonic()
                dev.bind(iommufd)
                marks["returned"] = time.monotonic()
                time.sleep(0.005)
            finally:
                stop.set()
                for t in threads:
                    t.join()
                dev.close()
            report.rounds += 1
            issued, returned = marks["issued"], marks["returned"]
            for t0, t1, op, outcome, wrong in results:
                phase = "before" if t1 < issued else "after" if t0 > returned else "during"
                key = (phase, op, outcome)
                report.counts[key] = report.counts.get(key, 0) + 1
                if phase == "before" and outcome == "OK":
                    report.violations.append(f"round {report.rounds}: {op} succeeded before "
                                             "BIND was issued")
                if phase == "after" and outcome == "EINVAL":
                    report.violations.append(f"round {report.rounds}: {op} failed with EINVAL "
                                             "after BIND returned")
                if outcome == "OK" and wrong:
                    report.violations.append(f"round {report.rounds}: {op} succeeded but saw "
                                             f"{wrong}")
    return report
