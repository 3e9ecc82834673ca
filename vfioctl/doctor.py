"""``vfioctl doctor``: can this machine (and a device) be used through VFIO, and in which modes?

Judged from what the running kernel shows (/sys/class/iommu, /dev/iommu, the vfio-dev and vfio
character majors, who serves /dev/vfio/vfio, the vfio-pci driver, /proc/modules); the kernel
config file is read only for what the runtime cannot show (whether a missing piece is a module
to load or an option the kernel was built without), and an unreadable one fails nothing.

Each finding is PASS, FAIL (this stands in the way: the fix is named) or NOTE (something this
host lacks that other modes make up for). The verdict is ok when at least one IOMMU mode can be
used (for DEVICE: used with that device).
"""
from __future__ import annotations

import gzip
import os
import platform
import resource
from dataclasses import asdict, dataclass
from pathlib import Path

from .backend import MODES, mode_support
from .fd import permission_hint
from .kernel import KernelCaps, cdev_missing, kernel_caps
from .pci import DEVFS, SYSFS, PciDevice, group_blockers
from .speedups import compiled

MEMLOCK_ENOUGH = 64 << 20


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    #: False: a NOTE, something missing that does not stand in the way
    required: bool = True
    #: a code naming the kind of fix, as VfioctlError.fix (``group``: bind the whole group),
    #: for front ends that phrase it in their own terms
    fix_code: str | None = None

    @property
    def status(self) -> str:
        return "PASS" if self.ok else ("FAIL" if self.required else "NOTE")

    def to_dict(self) -> dict:
        return {**asdict(self), "status": self.status}


@dataclass(frozen=True)
class Diagnosis:
    findings: list[Finding]
    modes: list[dict]  # {"mode", "available", "why_not"}, for this host (and DEVICE)

    @property
    def usable_modes(self) -> list[str]:
        return [m["mode"] for m in self.modes if m["available"]]

    @property
    def ok(self) -> bool:
        return bool(self.usable_modes) and all(f.ok or not f.required for f in self.findings)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "usable_modes": self.usable_modes, "modes": self.modes,
                "checks": [f.to_dict() for f in self.findings]}


def kernel_config(proc: Path = Path("/proc"), boot: Path = Path("/boot")) -> tuple[dict, str | None]:
    """(options, where they were read) from /proc/config.gz or /boot/config-$(uname -r)."""
    release = platform.release()
    for path in (proc / "config.gz", boot / f"config-{release}"):
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


def loaded_modules(path: str = "/proc/modules") -> set[str]:
    try:
        with open(path) as f:
            return {line.split()[0] for line in f if line.strip()}
    except OSError:
        return set()


def _built_as(opts: dict, option: str) -> str:
    """How the config file says ``option`` is built: ``y``, ``m``, ``n``, or ``?`` (no file)."""
    if not opts:
        return "?"
    return opts.get(option, "n")


def _iommu(sysfs: Path, caps: KernelCaps) -> Finding:
    try:
        cmdline = Path("/proc/cmdline").read_text().split()
    except OSError:
        cmdline = []
    flags = " ".join(w for w in cmdline if "iommu" in w) or "(no iommu options)"
    if caps.iommu_units:
        return Finding("IOMMU enabled", True,
                       f"{', '.join(caps.iommu_units)} in /sys/class/iommu; cmdline: {flags}")
    return Finding("IOMMU enabled", False, f"/sys/class/iommu is empty; cmdline: {flags}",
                   "enable VT-d/AMD-Vi in firmware and boot with intel_iommu=on (Intel) or "
                   "amd_iommu=on")


def _vfio_pci(caps: KernelCaps, opts: dict, modules: set[str]) -> Finding:
    if caps.vfio_pci:
        how = "loaded module" if "vfio_pci" in modules else "built in"
        return Finding("vfio-pci driver", True, f"registered ({how})")
    built = _built_as(opts, "CONFIG_VFIO_PCI")
    fix = ("the kernel was built without CONFIG_VFIO_PCI: use one built with it" if built == "n"
           else "load it: modprobe vfio-pci")
    return Finding("vfio-pci driver", False, "not registered (/sys/bus/pci/drivers/vfio-pci)",
                   fix)


def _container(caps: KernelCaps, devfs: Path) -> Finding:
    what = {"legacy": "VFIO's own container (CONFIG_VFIO_CONTAINER, type1)",
            "iommufd": "iommufd's compat container (CONFIG_IOMMUFD_VFIO_CONTAINER)",
            "unknown": "present, but not openable by this user"}.get(caps.container or "")
    if what:
        return Finding("/dev/vfio/vfio", caps.container != "unknown", what,
                       None if caps.container != "unknown" else
                       permission_hint(str(devfs / "vfio/vfio")), required=False)
    return Finding("/dev/vfio/vfio", False, "absent: no legacy group path",
                   "the group path needs CONFIG_VFIO_CONTAINER or "
                   "CONFIG_IOMMUFD_VFIO_CONTAINER, and the vfio module loaded", required=False)


def _cdev(caps: KernelCaps, devfs: Path, opts: dict) -> list[Finding]:
    why = cdev_missing(caps)
    if why is None:
        node = devfs / "iommu"
        ok = os.access(node, os.R_OK | os.W_OK)
        return [Finding("device cdev + iommufd", True,
                        "/dev/iommu and vfio-dev character devices present"),
                Finding("/dev/iommu permissions", ok,
                        f"{'read/write' if ok else 'no read/write'} access for uid "
                        f"{os.getuid()}",
                        None if ok else permission_hint(str(node)))]
    if _built_as(opts, "CONFIG_IOMMUFD") == "m" and not caps.iommufd:
        fix = "load iommufd (modprobe iommufd)"
    else:
        fix = ("the cdev checks (`vfioctl probe` on the cdev, iommufd mode) need a kernel built "
               "with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV")
    other = caps.container in ("legacy", "iommufd")
    # vfio not loaded yet (and not known to be missing): the group path cannot be seen yet
    unseen = not caps.vfio_pci and _built_as(opts, "CONFIG_VFIO_PCI") != "n"
    if other:
        fix += "; every other command works through the legacy group and container here"
    elif unseen:
        fix += ("; load vfio-pci (modprobe vfio-pci) and run doctor again: the legacy group "
                "path may serve every other command")
    return [Finding("device cdev + iommufd", False, why, fix, required=not (other or unseen))]


def _memlock() -> Finding:
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    root = os.geteuid() == 0
    if soft == resource.RLIM_INFINITY or root or soft >= MEMLOCK_ENOUGH:
        shown = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft >> 10} KiB"
        why = " (root: CAP_IPC_LOCK lifts it)" if root and soft != resource.RLIM_INFINITY else ""
        return Finding("RLIMIT_MEMLOCK", True, f"{shown}{why}")
    return Finding("RLIMIT_MEMLOCK", False,
                   f"{soft >> 10} KiB: DMA mappings pin memory against this limit",
                   f"raise it (`ulimit -l {MEMLOCK_ENOUGH >> 10}` or limits.conf memlock)")


def _speedups() -> Finding:
    name = "compiled hot paths"
    if compiled is not None:
        return Finding(name, True, "register read/write and prepared DMA mappings run compiled")
    return Finding(name, False, "not built: register read/write and prepared DMA mappings run in "
                   "pure Python (correct, 2-4x slower per call)",
                   "reinstall vfioctl where a C compiler and Python's headers are installed "
                   "(Debian: gcc python3-dev)", required=False)


def _device(dev: PciDevice, caps: KernelCaps) -> list[Finding]:
    out = []
    drv = dev.driver
    out.append(Finding(f"{dev.bdf} driver", drv == "vfio-pci", f"bound to {drv or '(no driver)'}",
                       None if drv == "vfio-pci" else f"`vfioctl bind {dev.bdf}`"))
    group = dev.iommu_group
    if group is None:
        out.append(Finding(f"{dev.bdf} IOMMU group", False, "no IOMMU group",
                           "enable the IOMMU (see above)"))
        return out
    blockers = group_blockers(dev)
    members = ", ".join(m.bdf for m in dev.group_members())
    out.append(Finding(
        f"{dev.bdf} IOMMU group viable", not blockers,
        f"group {group}: {members}" + ("; on host drivers: " + ", ".join(
            f"{m.bdf} ({m.driver})" for m in blockers) if blockers else ""),
        None if not blockers else "bind the whole group to vfio-pci (every member is recorded "
                                  "and can be returned to its driver)",
        fix_code=None if not blockers else "group"))
    if drv != "vfio-pci":
        return out
    nodes = []
    if caps.cdev_usable:
        nodes.append(("cdev", dev.cdev_path))
    if caps.container is not None:
        g = dev.devfs / "vfio" / str(group)
        nodes.append(("group node", g if g.exists() else None))
    for what, node in nodes:
        if node is None:
            out.append(Finding(f"{dev.bdf} {what}", False, "no node in /dev/vfio",
                               "devtmpfs or udev must create the /dev/vfio nodes"))
            continue
        ok = os.access(node, os.R_OK | os.W_OK)
        out.append(Finding(f"{dev.bdf} {what}", ok,
                           f"{node}" + ("" if ok else " (no read/write access)"),
                           None if ok else permission_hint(str(node))))
    return out


def diagnose(device: PciDevice | None = None, sysfs: Path = SYSFS,
             devfs: Path = DEVFS) -> Diagnosis:
    caps = kernel_caps(sysfs, devfs)
    opts, _where = kernel_config()
    findings = [_iommu(sysfs, caps), _vfio_pci(caps, opts, loaded_modules()),
                _container(caps, devfs)]
    findings += _cdev(caps, devfs, opts)
    findings += [_memlock(), _speedups()]
    modes = [s.to_dict() for s in mode_support(caps)]
    if not caps.iommu_units or not caps.vfio_pci:
        why = "no IOMMU enabled" if not caps.iommu_units else "vfio-pci is not registered"
        modes = [{**m, "available": False, "why_not": m["why_not"] or why} for m in modes]
    if device is not None:
        dev_findings = _device(device, caps)
        findings += dev_findings
        blocked = [f for f in dev_findings if not f.ok]
        if blocked:
            why = f"{device.bdf}: {blocked[0].detail}"
            modes = [{**m, "available": False, "why_not": m["why_not"] or why} for m in modes]
        elif device.cdev_path is None:
            modes = [{**m, "available": False, "why_not": f"{device.bdf} has no cdev"}
                     if m["mode"] == "iommufd" and m["available"] else m for m in modes]
    return Diagnosis(findings, modes)


__all__ = ["diagnose", "Diagnosis", "Finding", "kernel_config", "MODES"]
