"""Device drivers that make a device perform DMA and interrupts on request, for self-tests.

One small interface (the shape of the kernel VFIO selftest library's ``vfio_pci_driver_ops``):
``init`` programs the device, ``memcpy_start``/``memcpy_wait`` have it copy ``size`` bytes from
one IOVA to another ``count`` times, ``send_msi`` has it raise its interrupt, ``remove`` quiets
it. A driver is found by vendor:device; ``Session.driver()`` returns the one for its device.
"""
from __future__ import annotations

from ..errors import UsageError
from .base import DmaDriver, MemcpyResult
from .edu import EduDriver
from .igb import IgbDriver

DRIVERS: tuple[type[DmaDriver], ...] = (EduDriver, IgbDriver)

__all__ = ["DRIVERS", "DmaDriver", "EduDriver", "IgbDriver", "MemcpyResult", "driver_class",
           "no_driver_error", "require_driver"]


def driver_class(vendor: int, device: int) -> type[DmaDriver] | None:
    for cls in DRIVERS:
        if (vendor, device) in cls.ids:
            return cls
    return None


def require_driver(pci) -> type[DmaDriver]:
    """The driver class for PciDevice ``pci``; UsageError naming the devices that have one if
    there is none."""
    cls = driver_class(pci.vendor, pci.device)
    if cls is None:
        raise no_driver_error(pci.bdf, pci.ids)
    return cls


def _present() -> list[str]:
    """BDFs on this host that a driver here can drive."""
    from ..discovery import list_devices

    out = []
    for cls in DRIVERS:
        for v, d in cls.ids:
            out += [f"{e.bdf} ({cls.name})" for e in list_devices(f"{v:04x}:{d:04x}")]
    return sorted(out)


def no_driver_error(bdf: str, ids: str) -> UsageError:
    known = ", ".join(f"{cls.name} ({', '.join(f'{v:04x}:{d:04x}' for v, d in cls.ids)})"
                      for cls in DRIVERS)
    here = _present()
    where = f"; on this host: {', '.join(here)}" if here else "; none of them is on this host"
    return UsageError(f"{bdf} ({ids}) has no DMA driver in vfioctl: drivers exist for {known}"
                      f"{where}", hint="run the self-test on a device that has a driver")
