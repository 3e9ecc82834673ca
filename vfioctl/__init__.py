"""vfioctl: drive PCI devices through Linux VFIO, in every IOMMU mode the kernel offers.

    import vfioctl
    with vfioctl.open("0000:01:00.0") as s:      # the cdev + iommufd, else the group path
        print(hex(s.region("bar0").read(0)))

The names below are imported on first use (PEP 562), so that `vfioctl --help` and scripts that
use one layer do not pay for the others (the ctypes UAPI, the backends, pyudev).
"""
from __future__ import annotations

import importlib

_LAZY = {
    "open": "session", "Session": "session", "DmaBuffer": "session",
    "Device": "device", "DeviceInfo": "device", "IrqInfo": "device", "MappedRegion": "device",
    "Region": "device", "RegionInfo": "device", "SparseArea": "device",
    "IommuFD": "iommufd", "IOAS": "iommufd",
    "IovaRange": "iova", "Mapping": "iova", "DmaSpace": "iova", "PreparedMapping": "iova",
    "Group": "container", "Container": "container",
    "MODES": "backend",
    "VfioctlError": "errors", "KernelError": "errors", "UsageError": "errors",
    "EnvironmentProblem": "errors", "DeviceNotFound": "errors", "NotBoundToVfio": "errors",
    "RegionAccessError": "errors", "BindingError": "errors", "Refused": "errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vfioctl' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
