"""What the running kernel offers for VFIO, judged from what it shows at run time.

Device nodes, ``/proc/devices`` and probing ioctls without side effects; never the kernel's name
or version, and the config file only where nothing at run time can tell (doctor does that).

- ``iommufd``: ``/dev/iommu`` is there (``CONFIG_IOMMUFD``).
- ``cdev``: the kernel registered the ``vfio-dev`` character major (``CONFIG_VFIO_DEVICE_CDEV``):
  devices on vfio-pci get ``/dev/vfio/devices/vfioN``.
- ``group``: the ``vfio`` character major (``CONFIG_VFIO_GROUP``): ``/dev/vfio/GROUP`` nodes.
- ``container``: who serves ``/dev/vfio/vfio``: ``"legacy"`` (``CONFIG_VFIO_CONTAINER``, the
  type1 driver), ``"iommufd"`` (``CONFIG_IOMMUFD_VFIO_CONTAINER``), or None. Told apart by
  ``IOMMU_DESTROY`` of object 0 on it: iommufd looks the id up and answers ENOENT; the legacy
  container without an IOMMU driver set answers EINVAL to any ioctl it does not know.
- ``iommu_units``: ``/sys/class/iommu`` entries (an enabled hardware IOMMU).
- ``vfio_pci``: the vfio-pci driver is registered (built in or loaded).
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from . import uapi
from .ioctl import try_ioctl

PROC_DEVICES = "/proc/devices"


@dataclass(frozen=True)
class KernelCaps:
    iommufd: bool
    cdev: bool
    group: bool
    container: str | None
    iommu_units: tuple[str, ...]
    vfio_pci: bool

    @property
    def cdev_usable(self) -> bool:
        """Devices can be opened through their cdev and bound to /dev/iommu."""
        return self.iommufd and self.cdev

    def to_dict(self) -> dict:
        return {"iommufd": self.iommufd, "cdev": self.cdev, "group": self.group,
                "container": self.container, "iommu_units": list(self.iommu_units),
                "vfio_pci": self.vfio_pci}


def char_majors(path: str = PROC_DEVICES) -> set[str]:
    """Names of the registered character device majors."""
    names: set[str] = set()
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("Block"):
                    break
                parts = line.split()
                if len(parts) == 2 and parts[0].isdigit():
                    names.add(parts[1])
    except OSError:
        pass
    return names


def container_kind(path: str) -> str | None:
    """``"iommufd"`` or ``"legacy"`` for the container node at ``path``; None if absent."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            return None
        # present but not ours to open (permissions): judge by the iommufd node's presence
        return "unknown"
    try:
        return fd_container_kind(fd)
    finally:
        os.close(fd)


def fd_container_kind(fd: int) -> str:
    """``"iommufd"`` or ``"legacy"``: who serves the open container ``fd`` (one without an
    IOMMU type set yet, as opened)."""
    rc = try_ioctl(fd, uapi.IOMMU_DESTROY, uapi.iommu_destroy(id=0))
    return "iommufd" if rc in (-errno.ENOENT, 0) else "legacy"  # 0: not reached, no object 0


def kernel_caps(sysfs: str | os.PathLike = "/sys", devfs: str | os.PathLike = "/dev",
                proc_devices: str = PROC_DEVICES) -> KernelCaps:
    sysfs, devfs = Path(sysfs), Path(devfs)
    majors = char_majors(proc_devices)
    try:
        units = tuple(sorted(os.listdir(sysfs / "class/iommu")))
    except OSError:
        units = ()
    return KernelCaps(
        iommufd=(devfs / "iommu").exists(),
        cdev="vfio-dev" in majors,
        group="vfio" in majors,
        container=container_kind(str(devfs / "vfio/vfio")),
        iommu_units=units,
        vfio_pci=(sysfs / "bus/pci/drivers/vfio-pci").is_dir(),
    )


def cdev_missing(caps: KernelCaps) -> str | None:
    """Why devices cannot be used through their cdev on this kernel; None if they can."""
    lacking = []
    if not caps.iommufd:
        lacking.append("CONFIG_IOMMUFD (no /dev/iommu)")
    if not caps.cdev:
        lacking.append("CONFIG_VFIO_DEVICE_CDEV (no vfio-dev character devices)")
    if not lacking:
        return None
    return "this kernel lacks " + " and ".join(lacking)


def cdev_missing_hint(caps: KernelCaps) -> str:
    legacy = {"legacy": "the legacy VFIO group and type1 container",
              "iommufd": "the VFIO group with iommufd's compat container"}.get(caps.container or "")
    hint = ("boot a kernel built with CONFIG_IOMMUFD=y and CONFIG_VFIO_DEVICE_CDEV=y "
            "(Linux 6.6 or newer) for the device cdev")
    if legacy:
        hint += f"; this kernel offers {legacy} (/dev/vfio/vfio) instead"
    return hint
