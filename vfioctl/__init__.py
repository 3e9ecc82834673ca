"""vfioctl: drive PCI devices through Linux VFIO device cdevs and iommufd.

    import vfioctl
    with vfioctl.open("0000:01:00.0") as s:      # open, bind a new iommufd, attach a new IOAS
        print(hex(s.region("bar0").read(0)))
"""
from .device import Device, DeviceInfo, IrqInfo, MappedRegion, Region, RegionInfo, SparseArea
from .errors import (BindingError, DeviceNotFound, EnvironmentProblem, KernelError, NotBoundToVfio,
                     Refused, RegionAccessError, UsageError, VfioctlError)
from .iommufd import IOAS, IommuFD, IovaRange, Mapping
from .session import DmaBuffer, Session, open  # noqa: A004

__all__ = [
    "open", "Session", "DmaBuffer", "Device", "DeviceInfo", "Region", "RegionInfo", "IrqInfo",
    "MappedRegion", "SparseArea", "IommuFD", "IOAS", "IovaRange", "Mapping", "VfioctlError",
    "KernelError", "UsageError", "EnvironmentProblem", "DeviceNotFound", "NotBoundToVfio",
    "RegionAccessError", "BindingError", "Refused",
]
