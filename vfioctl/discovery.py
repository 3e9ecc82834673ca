"""PCI device discovery through udev (pyudev): the one module that enumerates devices."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError
from .pci import PciDevice, member_blocks_vfio

_CLASS_NAMES = {
    0x00: "unclassified", 0x01: "storage", 0x02: "network", 0x03: "display", 0x04: "multimedia",
    0x05: "memory", 0x06: "bridge", 0x07: "communication", 0x08: "system", 0x09: "input",
    0x0C: "serial bus", 0x0D: "wireless", 0xFF: "other",
}


@dataclass(frozen=True)
class PciEntry:
    bdf: str
    ids: str
    vendor_name: str | None
    device_name: str | None
    pci_class: int
    driver: str | None
    iommu_group: int | None
    group_members: tuple[str, ...]
    cdev: str | None
    vfio_viable: bool
    physfn: str | None = None          # a VF's PF
    virtfns: tuple[str, ...] = ()      # a PF's VFs

    @property
    def class_name(self) -> str:
        return _CLASS_NAMES.get(self.pci_class >> 16, "other")

    def to_dict(self) -> dict:
        return {
            "bdf": self.bdf, "ids": self.ids, "vendor_name": self.vendor_name,
            "device_name": self.device_name, "class": f"{self.pci_class:06x}",
            "class_name": self.class_name, "driver": self.driver,
            "iommu_group": self.iommu_group, "group_members": list(self.group_members),
            "cdev": self.cdev, "vfio_viable": self.vfio_viable,
            "physfn": self.physfn, "virtfns": list(self.virtfns),
        }


def parse_ids(text: str) -> tuple[int | None, int | None]:
    """``8086:10d3`` or ``8086:`` / ``:10d3``."""
    v, sep, d = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return (int(v, 16) if v else None, int(d, 16) if d else None)
    except ValueError:
        raise UsageError(f"{text!r} is not VENDOR:DEVICE",
                         hint="give hex IDs such as 8086:10d3, 8086: or :10d3") from None


def _entry(udev_dev) -> PciEntry:
    pci = PciDevice(udev_dev.sys_name)
    props = udev_dev.properties
    members = pci.group_members()
    cdev = pci.cdev_path
    return PciEntry(
        bdf=pci.bdf, ids=pci.ids,
        vendor_name=props.get("ID_VENDOR_FROM_DATABASE"),
        device_name=props.get("ID_MODEL_FROM_DATABASE"),
        pci_class=pci.pci_class, driver=pci.driver, iommu_group=pci.iommu_group,
        group_members=tuple(m.bdf for m in members),
        cdev=str(cdev) if cdev else None,
        vfio_viable=pci.iommu_group is not None and not any(member_blocks_vfio(m) for m in members),
        physfn=pf.bdf if (pf := pci.physfn) else None,
        virtfns=tuple(v.bdf for v in pci.virtfns()),
    )


def list_devices(ids: str | None = None, vfio_only: bool = False) -> list[PciEntry]:
    """Every PCI device udev knows, optionally filtered by VENDOR:DEVICE or having a cdev."""
    import pyudev

    want = parse_ids(ids) if ids else (None, None)
    out = []
    for d in pyudev.Context().list_devices(subsystem="pci"):
        e = _entry(d)
        vendor, device = (int(x, 16) for x in e.ids.split(":"))
        if want[0] is not None and vendor != want[0]:
            continue
        if want[1] is not None and device != want[1]:
            continue
        if vfio_only and e.cdev is None:
            continue
        out.append(e)
    return sorted(out, key=lambda e: e.bdf)


def select_devices(selectors) -> list[PciDevice]:
    """The devices a list of selectors names, in order, each once: a PCI address (full or
    short), a cdev name or path (vfioN), or VENDOR:DEVICE (every device with those IDs).
    A selector that matches nothing is a UsageError naming it."""
    from .pci import resolve

    out: dict[str, PciDevice] = {}
    for sel in selectors:
        sel = sel.strip()
        if ":" in sel and "." not in sel and not sel.startswith(("/", "vfio")):
            found = [PciDevice(e.bdf) for e in list_devices(sel)]
            if not found:
                raise UsageError(f"no PCI device has the IDs {sel}",
                                 hint="`vfioctl list` shows the devices and their IDs")
        else:
            found = [resolve(sel)]
        for d in found:
            out.setdefault(d.bdf, d)
    return list(out.values())
