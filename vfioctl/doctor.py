"""``vfioctl doctor``: is this machine (and a device) ready for VFIO cdev + iommufd?"""
from __future__ import annotations

import gzip
import os
import platform
import resource
from dataclasses import asdict, dataclass
from pathlib import Path

from .pci import group_blockers
from .pci import DEVFS, SYSFS, PciDevice

NEEDED_CONFIG = ("CONFIG_IOMMUFD", "CONFIG_VFIO_DEVICE_CDEV", "CONFIG_VFIO_PCI")
MEMLOCK_ENOUGH = 64 << 20


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def kernel_config(proc: Path = Path("/proc"), boot: Path = Path("/boot")) -> tuple[dict, str | None]:
    """(options, where they were read) from /proc/config.gz or /boot/config-$(uname -r)."""
    release = platform.release()
    candidates = [proc / "config.gz", boot / f"config-{release}"]
    for path in candidates:
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except OSError:
            continue
        opts = {}
        for line in raw.decode(errors="replace").splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                opts[k] = v
        return opts, str(path)
    return {}, None


def _config_findings() -> list[Finding]:
    opts, where = kernel_config()
    if where is None:
        return [Finding(f"kernel config {o}", False, "kernel config not readable",
                        "enable CONFIG_IKCONFIG_PROC (/proc/config.gz) or install "
                        f"/boot/config-{platform.release()}") for o in NEEDED_CONFIG]
    out = []
    for o in NEEDED_CONFIG:
        v = opts.get(o)
        if v in ("y", "m"):
            out.append(Finding(f"kernel config {o}", True, f"{o}={v} ({where})"))
        else:
            extra = (" (Debian's stock kernels ship without it: build one with it, e.g. "
                     "scripts/build-kernel.sh)") if o == "CONFIG_IOMMUFD" else ""
            out.append(Finding(f"kernel config {o}", False, f"{o} is not set in {where}",
                               f"use a kernel built with {o}=y{extra}"))
    return out


def _iommu_findings(sysfs: Path, devfs: Path) -> list[Finding]:
    out = []
    try:
        units = sorted(os.listdir(sysfs / "class/iommu"))
    except OSError:
        units = []
    cmdline = ""
    try:
        cmdline = Path("/proc/cmdline").read_text().strip()
    except OSError:
        pass
    flags = [w for w in cmdline.split() if "iommu" in w]
    if units:
        out.append(Finding("IOMMU present and enabled", True,
                           f"{', '.join(units)} in /sys/class/iommu; cmdline: "
                           f"{' '.join(flags) or '(no iommu options)'}"))
    else:
        out.append(Finding("IOMMU present and enabled", False,
                           f"/sys/class/iommu is empty; cmdline: {' '.join(flags) or '(no iommu options)'}",
                           "enable VT-d/AMD-Vi in firmware and boot with intel_iommu=on (Intel) "
                           "or amd_iommu=on"))
    node = devfs / "iommu"
    if node.exists():
        out.append(Finding("/dev/iommu present", True, f"{node} exists"))
        ok = os.access(node, os.R_OK | os.W_OK)
        out.append(Finding("/dev/iommu permissions", ok,
                           f"{'read/write' if ok else 'no read/write'} access for uid {os.getuid()}",
                           None if ok else "run as root, or give your user access to /dev/iommu "
                                           "(a udev rule setting its group and mode)"))
    else:
        out.append(Finding("/dev/iommu present", False, f"{node} does not exist",
                           "load iommufd (`modprobe iommufd`); the kernel needs CONFIG_IOMMUFD"))
    return out


def _memlock_finding() -> Finding:
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    root = os.geteuid() == 0
    if soft == resource.RLIM_INFINITY or root or soft >= MEMLOCK_ENOUGH:
        shown = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft >> 10} KiB"
        why = " (root: CAP_IPC_LOCK lifts it)" if root and soft != resource.RLIM_INFINITY else ""
        return Finding("RLIMIT_MEMLOCK", True, f"{shown}{why}")
    return Finding("RLIMIT_MEMLOCK", False,
                   f"{soft >> 10} KiB: DMA mappings pin memory against this limit",
                   f"raise it (`ulimit -l {MEMLOCK_ENOUGH >> 10}` or limits.conf memlock)")


def _device_findings(dev: PciDevice) -> list[Finding]:
    out = []
    drv = dev.driver
    out.append(Finding(f"{dev.bdf} driver", drv == "vfio-pci", f"bound to {drv or '(no driver)'}",
                       None if drv == "vfio-pci" else f"`vfioctl bind {dev.bdf}`"))
    blockers = group_blockers(dev)
    group = dev.iommu_group
    if group is None:
        out.append(Finding(f"{dev.bdf} IOMMU group", False, "no IOMMU group",
                           "enable the IOMMU (see above)"))
    else:
        members = ", ".join(m.bdf for m in dev.group_members())
        out.append(Finding(
            f"{dev.bdf} IOMMU group viable", not blockers,
            f"group {group}: {members}" + ("; on host drivers: " + ", ".join(
                f"{m.bdf} ({m.driver})" for m in blockers) if blockers else ""),
            None if not blockers else f"`vfioctl bind --group {dev.bdf}`"))
    node = dev.cdev_path
    if node is not None:
        ok = os.access(node, os.R_OK | os.W_OK)
        out.append(Finding(f"{dev.bdf} cdev", ok, f"{node}" + ("" if ok else " (no read/write access)"),
                           None if ok else f"run as root, or give your user access to {node}"))
    else:
        fix = (f"`vfioctl bind {dev.bdf}`" if drv != "vfio-pci"
               else "the kernel needs CONFIG_VFIO_DEVICE_CDEV=y")
        out.append(Finding(f"{dev.bdf} cdev", False, "no /dev/vfio/devices node", fix))
    return out


def diagnose(device: PciDevice | None = None, sysfs: Path = SYSFS, devfs: Path = DEVFS) -> list[Finding]:
    out = _config_findings()
    out += _iommu_findings(sysfs, devfs)
    out.append(_memlock_finding())
    if device is not None:
        out += _device_findings(device)
    return out


__all__ = ["diagnose", "Finding", "kernel_config"]
