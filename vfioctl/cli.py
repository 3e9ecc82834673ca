"""The ``vfioctl`` command line: thin click commands over the library, ``--json`` everywhere.

Exit status: 0 success; 1 the kernel or device deviated (a failed probe check, an ioctl error);
2 usage and environment errors (bad input, missing node, permission, device not on vfio-pci).
Errors are one line ``error: ...`` and a ``hint: ...`` naming the fix; never a traceback
(set VFIOCTL_DEBUG=1 to see one).
"""
from __future__ import annotations

import functools
import json
import os
import sys

import click

from .errors import UsageError, VfioctlError, errno_name

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


#: the CLI's words for the library's fix codes (VfioctlError.fix): its own flags
FIX_HINTS = {
    "width": "use --width 1, 2, 4 or 8",
    "pread": "drop --mmap: pread/pwrite access reaches every offset of the region",
    "group": "add --group to bind the whole group (each member is recorded and restorable); "
             "--force does not override this",
    "force": "stop using it, or add --force to bind anyway",
    "driver": "name the driver: `vfioctl unbind DEVICE --driver NAME`",
    "hot-reset": "try `vfioctl reset --hot DEVICE` if it sits behind a bridge; `vfioctl info` "
                 "shows the hot-reset scope",
    "group-path": "open it through its group: --iommu-mode vfio_type1v2_iommu (or "
                  "iommufd_compat_type1v2 where /dev/vfio/vfio is iommufd's)",
    "function-reset": "a device on a root bus has no secondary bus to reset; use `vfioctl reset "
                      "DEVICE` (without --hot) if it advertises RESET",
}


def fail(exc: VfioctlError, as_json: bool) -> None:
    if exc.fix == "permissions":
        exc.hint += "; `vfioctl setup-permissions` prints the udev rules"
    elif exc.fix in FIX_HINTS:
        exc.hint = FIX_HINTS[exc.fix]
    if as_json:
        emit_json(exc.to_dict())
    else:
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
    sys.exit(exc.exit_code)


def command(group, name=None, **kw):
    """A click command whose VfioctlError/OSError become a one-line error and an exit code."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            as_json = kwargs.get("as_json", False)
            try:
                return fn(*args, **kwargs)
            except BrokenPipeError:  # `vfioctl list | head`: the reader left; say nothing
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                sys.exit(1)
            except VfioctlError as exc:
                if os.environ.get("VFIOCTL_DEBUG"):
                    raise
                fail(exc, as_json)
            except PermissionError as exc:
                if os.environ.get("VFIOCTL_DEBUG"):
                    raise
                fail(VfioctlError(f"permission denied: {exc.filename or exc}", errno=exc.errno,
                                  path=exc.filename, hint="run as root (sudo vfioctl ...)"),
                     as_json)
            except OSError as exc:
                if os.environ.get("VFIOCTL_DEBUG"):
                    raise
                where = f" ({exc.filename})" if exc.filename else ""
                fail(VfioctlError(f"{exc.strerror or exc}{where}: {errno_name(exc.errno)}",
                                  errno=exc.errno, path=exc.filename,
                                  hint="`vfioctl doctor` checks this machine's VFIO set-up"),
                     as_json)
        return group.command(name, context_settings=CONTEXT, **kw)(wrapper)
    return deco


json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")


class Seconds(click.FloatRange):
    """A wait in seconds: 0 or more (inf: no limit); not NaN, which no deadline ever passes."""

    name = "seconds"

    def __init__(self):
        super().__init__(min=0)

    def convert(self, value, param, ctx):
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = float("nan")
        if seconds != seconds:
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return super().convert(seconds, param, ctx)


def open_options(fn):
    """--iommu-mode and --vf-token, for every command that opens a device."""
    fn = click.option("--vf-token", envvar="VFIOCTL_VF_TOKEN", metavar="UUID",
                      help="VF token, to open a VF whose PF is on vfio-pci "
                           "(env VFIOCTL_VF_TOKEN)")(fn)
    # not click's envvar: the library reads $VFIOCTL_IOMMU_MODE itself, and names it in its
    # error where the value that is no mode came from there
    fn = click.option("--iommu-mode", metavar="MODE",
                      help="auto, iommufd, iommufd_compat_type1, iommufd_compat_type1v2, "
                           "vfio_type1_iommu, vfio_type1v2_iommu (default: env "
                           "VFIOCTL_IOMMU_MODE, else auto)")(fn)
    return fn


def open_session(device: str, iommu_mode: str, vf_token: str | None):
    from . import session as _session

    return _session.open(device, iommu_mode=iommu_mode, vf_token=vf_token)


def int_arg(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a number",
                         hint=f"give the {what} in decimal or 0x-prefixed hex") from None


class Interrupted(VfioctlError):
    """Ctrl-C (SIGINT) ended the command."""

    exit_code = 130


def hoist_json(args: list[str]) -> tuple[list[str], bool]:
    """``vfioctl --json CMD ...`` as ``vfioctl CMD --json ...`` (the group's own options take no
    value, so the leading ``-`` words are its); and whether JSON was asked for anywhere before
    a ``--``."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        i += 1
    if "--json" in args[:i]:
        lead = [a for a in args[:i] if a != "--json"]
        args = lead + args[i:i + 1] + ["--json"] + args[i + 1:] if i < len(args) else lead
        return args, True
    return args, "--json" in (args[:args.index("--")] if "--" in args else args)


class VfioctlGroup(click.Group):
    """click's own errors (unknown option, bad choice, missing argument) in vfioctl's form: one
    ``error:`` line and one ``hint:`` line, exit 2; as JSON where ``--json`` was given (before or
    after the command's name)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        args, as_json = hoist_json(list(sys.argv[1:] if args is None else args))
        try:
            if as_json and not args:
                raise click.exceptions.UsageError("Missing command.")
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else (prog_name or "vfioctl")
            hint = f"`{where} --help` shows the arguments and options"
            if (isinstance(exc, click.exceptions.NoSuchOption)
                    and exc.option_name[1:2].isdigit()):  # -1, -0x10: a negative number
                hint = ("offsets and values are unsigned: -1 in 4 bytes is 0xffffffff (a word "
                        "that starts with - is read as an option)")
            fail(UsageError(exc.format_message(), hint=hint), as_json)
        except click.exceptions.Abort:
            fail(Interrupted("interrupted", hint="nothing was left half-done; run the command "
                                                 "again"), as_json)
        except click.exceptions.ClickException as exc:
            err = UsageError(exc.format_message(), hint="`vfioctl --help` lists the commands")
            err.exit_code = exc.exit_code
            fail(err, as_json)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=VfioctlGroup, context_settings=CONTEXT)
@click.version_option(package_name="vfioctl")
def main():
    """Drive PCI devices through VFIO device cdevs and iommufd.

    DEVICE is a PCI address (0000:01:00.0 or 01:00.0), a cdev name (vfio0) or a cdev path
    (/dev/vfio/devices/vfio0).
    """


# --- probe ---------------------------------------------------------------------------------------
@command(main)
@click.argument("device")
@click.option("--iommu-mode", metavar="MODE",
              help="iommufd (the cdev checks) or a group-path mode; auto: the cdev where the "
                   "kernel has it (default: env VFIOCTL_IOMMU_MODE, else auto)")
@click.option("--race", is_flag=True,
              help="instead: workers hammer a fresh cdev fd (GET_INFO, config pread, mmap) "
                   "while BIND runs; every success must see an opened device, none before "
                   "BIND, no EINVAL after it (iommufd only)")
@click.option("--reset", "with_reset", is_flag=True,
              help="also check VFIO_DEVICE_RESET (blocked before BIND; after it, OK if the "
                   "device advertises RESET): this resets the device")
@click.option("--seconds", default=3.0, show_default=True, help="how long --race runs")
@click.option("--workers", default=3, show_default=True, help="threads --race runs")
@click.option("--vf-token", envvar="VFIOCTL_VF_TOKEN", metavar="UUID",
              help="for a VF whose PF is on vfio-pci: the PF's VF token, to probe past the "
                   "token rows (env VFIOCTL_VF_TOKEN)")
@json_option
def probe(device, iommu_mode, race, with_reset, seconds, workers, vf_token, as_json):
    """Prove the kernel's access rules on DEVICE: on the cdev, that every ioctl, read, write and
    mmap fails until VFIO_DEVICE_BIND_IOMMUFD and works after it; on the group path, the legacy
    ordering rules of group, container and device fd.

    Touches: opens and closes the device (vfio-pci may reset it on open, as for any user);
    reads config space and info; its only writes put the vendor ID sysfs reports into the
    vendor-ID field of config space (read-only, virtualised by vfio-pci; the value it holds);
    maps one BAR page without touching it; on the group path, tries one DMA map of its own page
    that the kernel must refuse. No reset unless --reset. For a VF whose PF is on vfio-pci it
    also tries to open it without and with a wrong VF token (refused: EACCES).
    """
    from .pci import resolve
    from .probe import probe as run_probe

    if race:
        return _probe_race(resolve(device), iommu_mode, seconds, workers, as_json)
    report = run_probe(resolve(device), iommu_mode, reset=with_reset, vf_token=vf_token)
    if as_json:
        emit_json(report.to_dict())
    else:
        where = (f"cdev {report.cdev}  devid {report.devid}" if report.cdev else
                 "group path")
        print_checks(f"device {report.device}  mode {report.iommu_mode}  {where}", report)
    sys.exit(0 if report.ok else 1)


def print_checks(title: str, report) -> None:
    """A report's notes, a title line, its checks as a table, and a count."""
    rows = [(c.name, c.expected, c.observed, "PASS" if c.ok else "FAIL") for c in report.checks]
    header = ("check", "expected", "observed", "result")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo(title)
    click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    failed = sum(not c.ok for c in report.checks)
    click.echo(f"{len(rows) - failed} passed, {failed} failed")


# --- selftest ------------------------------------------------------------------------------------
@command(main)
@click.argument("device")
@open_options
@click.option("--seconds", default=1.0, show_default=True,
              help="how long memcpy_storm copies")
@click.option("--seed", type=int, default=None, help="seed of the random test data")
@json_option
def selftest(device, iommu_mode, vf_token, seconds, seed, as_json):
    """Have DEVICE itself prove DMA through the IOMMU and its interrupt, with vfioctl's driver
    for it (edu, igb): copies arrive intact (memcpy_success), a copy from or to an unmapped IOVA
    is blocked and changes nothing (memcpy_from/to_unmapped_iova), its interrupt arrives once
    (send_msi), the three interleaved (mix_and_match), and copies for --seconds
    (memcpy_storm, in MB/s). Exit 0 if all pass, 1 if any fails, 2 for usage and environment
    errors (no driver for DEVICE, not on vfio-pci).

    Touches: programs the device (it is reset first and quieted after; igb is put in loopback
    and function-reset after a blocked copy), maps and unmaps DMA buffers.
    """
    from .selftest import check_device, run

    if not 0 < seconds <= 3600:
        raise UsageError(f"--seconds {seconds} is out of range", hint="use 0 < --seconds <= 3600")
    check_device(device, iommu_mode)
    with open_session(device, iommu_mode, vf_token) as s:
        report = run(s, seconds=seconds, seed=seed)
    if as_json:
        emit_json(report.to_dict())
    else:
        print_checks(f"device {report.device}  driver {report.driver}  mode {report.iommu_mode}",
                     report)
    sys.exit(0 if report.ok else 1)


def _probe_race(pci, iommu_mode, seconds, workers, as_json) -> None:
    from .backend import requested_mode
    from .probe import race

    mode = requested_mode(iommu_mode)
    if mode not in ("auto", "iommufd"):
        raise UsageError(f"--race proves the cdev's blocked state: it needs --iommu-mode "
                         f"iommufd, not {mode}", hint="drop --iommu-mode, or use iommufd")
    if seconds <= 0 or workers < 1:
        raise UsageError("--seconds must be positive and --workers at least 1",
                         hint="e.g. --seconds 3 --workers 3")
    report = race(pci, seconds=seconds, workers=workers)
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(f"device {report.device}: {report.rounds} rounds, {report.workers} workers")
        for (phase, op, outcome), n in sorted(report.counts.items()):
            click.echo(f"  {phase:6s} {op:13s} {outcome:7s} {n}")
        for v in report.violations[:20]:
            click.echo(f"VIOLATION: {v}")
        click.echo("race: PASS" if report.ok else f"race: FAIL ({len(report.violations)} "
                                                   "violations)")
    sys.exit(0 if report.ok else 1)


# --- info ----------------------------------------------------------------------------------------
def _flags(names) -> str:
    return "|".join(names) or "-"


@command(main)
@click.argument("device")
@open_options
@json_option
def info(device, iommu_mode, vf_token, as_json):
    """Device flags, regions (size, offset, flags, capabilities), IRQs and hot-reset scope."""
    with open_session(device, iommu_mode, vf_token) as s:
        d = s.device.info()
        regions = s.device.regions()
        irqs = s.device.irqs()
        try:
            hot = s.device.hot_reset_info()
            hot_err = None
        except VfioctlError as exc:
            hot, hot_err = None, errno_name(exc.errno)
        opened = s.describe()
        iommu = s.dma_info()
    if as_json:
        emit_json({
            **opened, "iommu": iommu,
            "flags": d.flags, "flag_names": list(d.flag_names),
            "regions": [{
                "index": r.index, "name": r.name, "size": r.size, "offset": r.offset,
                "flags": r.flags, "flag_names": list(r.flag_names),
                "sparse_mmap": None if r.sparse_areas is None else
                [{"offset": a.offset, "size": a.size} for a in r.sparse_areas],
                "type": None if r.type is None else {"type": r.type[0], "subtype": r.type[1]},
                "msix_mappable": r.msix_mappable} for r in regions],
            "irqs": [{"index": i.index, "name": i.name, "count": i.count, "flags": i.flags,
                      "flag_names": list(i.flag_names)} for i in irqs],
            "hot_reset": {"error": hot_err} if hot is None else {
                "flags": hot.flags, "uses_devid": hot.uses_devid, "all_owned": hot.all_owned,
                "devices": [{"bdf": x.bdf, "devid": x.devid} for x in hot.devices]},
        })
        return
    via = f"devid {opened['devid']}" if opened["devid"] is not None else "from the group"
    click.echo(f"{s.pci.bdf}  {s.pci.ids}  mode {opened['iommu_mode']}  "
               f"{opened['device_fd_from']}  {via}")
    click.echo("iommu: " + ", ".join(f"{k} {v}" for k, v in iommu.items()))
    click.echo(f"flags {d.flags:#x} ({_flags(d.flag_names)}), {d.num_regions} regions, "
               f"{d.num_irqs} IRQ indexes")
    click.echo("regions:")
    for r in regions:
        caps = []
        if r.sparse_areas is not None:
            caps.append("sparse " + ",".join(f"{a.offset:#x}+{a.size:#x}" for a in r.sparse_areas))
        if r.type is not None:
            caps.append(f"type {r.type[0]:#x}/{r.type[1]:#x}")
        if r.msix_mappable:
            caps.append("msix-mappable")
        click.echo(f"  {r.index:2d} {r.name:8s} size {r.size:#12x}  offset {r.offset:#16x}  "
                   f"{_flags(r.flag_names):20s} {'; '.join(caps)}".rstrip())
    click.echo("irqs:")
    for i in irqs:
        click.echo(f"  {i.index:2d} {i.name:5s} count {i.count:3d}  {_flags(i.flag_names)}")
    if hot is None:
        click.echo(f"hot reset: not available ({hot_err})")
    else:
        kind = "devid" if hot.uses_devid else "group"  # the group path reports group ids
        owned = ", all owned" if hot.all_owned else ""
        click.echo(f"hot reset: {len(hot.devices)} device(s) affected{owned}: " + ", ".join(
            f"{x.bdf} ({kind} {x.devid})" for x in hot.devices))


# --- region access ---------------------------------------------------------------------------------
width_option = click.option("--width", "-w", type=click.Choice(["1", "2", "4", "8"]), default="4",
                            show_default=True, help="access width in bytes")
mmap_option = click.option("--mmap", "use_mmap", is_flag=True,
                           help="access through an mmap of the region, not pread/pwrite")


def check_region(region: str) -> None:
    """REGION's name checked before any device is looked for or opened: a name that is no
    region is the first thing to fix, whatever state the device is in."""
    from .device import region_index

    region_index(region)


def _accessor(s, region: str, use_mmap: bool):
    reg = s.region(region)
    return reg, (reg.mmap() if use_mmap else reg)


@command(main)
@click.argument("device")
@click.argument("region")
@click.argument("offset")
@width_option
@click.option("--count", "-n", default=1, show_default=True, help="consecutive values to read")
@mmap_option
@open_options
@json_option
def read(device, region, offset, width, count, use_mmap, iommu_mode, vf_token, as_json):
    """Read COUNT values of WIDTH bytes from REGION at OFFSET (config, bar0..bar5, rom, vga, N)."""
    off, w = int_arg(offset, "offset"), int(width)
    if count < 1:
        raise UsageError(f"--count {count} is not positive", hint="use --count 1 or more")
    check_region(region)
    with open_session(device, iommu_mode, vf_token) as s:
        reg, acc = _accessor(s, region, use_mmap)
        values = [acc.read(off + i * w, w) for i in range(count)]
    if as_json:
        emit_json({"device": s.pci.bdf, "iommu_mode": s.iommu_mode, "region": reg.name,
                   "offset": off, "width": w,
                   "access": "mmap" if use_mmap else "pread", "values": values,
                   "hex": [f"{v:#0{2 + 2 * w}x}" for v in values]})
    else:
        for v in values:
            click.echo(f"{v:#0{2 + 2 * w}x}")


@command(main)
@click.argument("device")
@click.argument("region")
@click.argument("offset")
@click.argument("values", nargs=-1, required=True)
@width_option
@mmap_option
@open_options
@json_option
def write(device, region, offset, values, width, use_mmap, iommu_mode, vf_token, as_json):
    """Write VALUES (WIDTH bytes each, consecutively) to REGION at OFFSET."""
    off, w = int_arg(offset, "offset"), int(width)
    nums = [int_arg(v, "value") for v in values]
    check_region(region)
    with open_session(device, iommu_mode, vf_token) as s:
        reg, acc = _accessor(s, region, use_mmap)
        for i, v in enumerate(nums):
            acc.write(off + i * w, v, w)
    if as_json:
        emit_json({"device": s.pci.bdf, "iommu_mode": s.iommu_mode, "region": reg.name,
                   "offset": off, "width": w,
                   "access": "mmap" if use_mmap else "pwrite", "written": nums})
    else:
        click.echo(f"wrote {len(nums)} value(s) of {w} bytes to {reg.name}+{off:#x}")


def hexdump(data: bytes, base: int) -> list[str]:
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i: i + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{base + i:08x}  {hexes[:23]:<23}  {hexes[24:]:<23}  |{text}|")
    return lines


@command(main)
@click.argument("device")
@click.argument("region")
@click.argument("offset", required=False, default="0")
@click.argument("length", required=False)
@mmap_option
@open_options
@json_option
def dump(device, region, offset, length, use_mmap, iommu_mode, vf_token, as_json):
    """Hexdump LENGTH bytes of REGION from OFFSET (default: up to 256 bytes)."""
    off = int_arg(offset, "offset")
    check_region(region)
    with open_session(device, iommu_mode, vf_token) as s:
        reg, acc = _accessor(s, region, use_mmap)
        n = int_arg(length, "length") if length is not None else max(min(reg.size - off, 256), 1)
        data = acc.read_bytes(off, n)
    if as_json:
        emit_json({"device": s.pci.bdf, "iommu_mode": s.iommu_mode, "region": reg.name,
                   "offset": off, "length": len(data), "data": data.hex()})
    else:
        click.echo("\n".join(hexdump(data, off)))


# --- discovery and binding -------------------------------------------------------------------------
@command(main, "list")
@click.option("-d", "ids", metavar="VENDOR:DEVICE", help="only devices with these IDs (hex)")
@click.option("--vfio", "vfio_only", is_flag=True, help="only devices that have a VFIO cdev")
@json_option
def list_(ids, vfio_only, as_json):
    """PCI devices: address, IDs, class, driver, IOMMU group, cdev, vfio viability."""
    from .discovery import list_devices

    entries = list_devices(ids, vfio_only)
    if as_json:
        emit_json([e.to_dict() for e in entries])
        return
    click.echo(f"{'BDF':13s} {'IDS':9s} {'CLASS':13s} {'DRIVER':12s} {'GROUP':5s} {'CDEV':24s} "
               "VIABLE  NAME")
    for e in entries:
        name = " ".join(x for x in (e.vendor_name, e.device_name) if x)
        group = "-" if e.iommu_group is None else str(e.iommu_group)
        link = (f" [VF of {e.physfn}]" if e.physfn else
                f" [PF: {len(e.virtfns)} VFs]" if e.virtfns else "")
        click.echo(f"{e.bdf:13s} {e.ids:9s} {e.class_name:13s} {e.driver or '-':12s} {group:5s} "
                   f"{e.cdev or '-':24s} {'yes' if e.vfio_viable else 'no':7s} {name}{link}"
                   .rstrip())


def _devices(specs):
    from .pci import resolve

    return [resolve(s) for s in specs]


def _progress(always: bool):
    from .binding import tty_progress

    if always:
        return lambda msg: click.echo(msg, err=True)
    return tty_progress


@command(main)
@click.argument("devices", nargs=-1, required=True)
@click.option("--group", is_flag=True, help="also bind the other members of the IOMMU group")
@click.option("--force", is_flag=True, help="bind even if a netdev is up or a disk is in use")
@click.option("--dry-run", is_flag=True, help="print each step; change nothing")
@click.option("--timeout", default=10.0, type=Seconds(), show_default=True,
              help="seconds to wait for the cdev")
@json_option
def bind(devices, group, force, dry_run, timeout, as_json):
    """Move DEVICES to vfio-pci, recording their drivers so that `unbind`/`restore` can return them."""
    from . import binding

    results = binding.bind(_devices(devices), group=group, force=force, dry_run=dry_run,
                           timeout=timeout, progress=_progress(dry_run and not as_json))
    if as_json:
        emit_json({"dry_run": dry_run, "devices": [r.to_dict() for r in results]})
        return
    if dry_run:
        click.echo("dry run: nothing was changed")
        return
    for r in results:
        was = r.original_driver or "(no driver)"
        state = "bound" if r.changed else "already bound"
        click.echo(f"{r.bdf}: {state} to vfio-pci (was {was}) -> {r.cdev}")


@command(main)
@click.argument("devices", nargs=-1, required=True)
@click.option("--driver", metavar="NAME", help="bind to this driver instead of the recorded one")
@click.option("--timeout", default=10.0, type=Seconds(), show_default=True,
              help="seconds to wait for programs that have a device open to close it")
@json_option
def unbind(devices, driver, timeout, as_json):
    """Return DEVICES to their original driver (or --driver NAME). Idempotent. A device that a
    program still has open is waited for (--timeout), then refused naming the program: the
    kernel's unbind would block until it closes the device."""
    from . import binding

    results = binding.unbind(_devices(devices), driver=driver, progress=_progress(False),
                             timeout=timeout)
    _print_unbound(results, as_json)


def _print_unbound(results, as_json):
    if as_json:
        emit_json({"devices": [r.to_dict() for r in results]})
        return
    if not results:
        click.echo("nothing to restore")
    for r in results:
        verb = "returned to" if r.changed else "already on"
        click.echo(f"{r.bdf}: {verb} {r.driver or '(no driver)'}")


@command(main)
@click.argument("pf")
@click.option("--numvfs", type=int, metavar="N", help="set the VF count (0 removes them)")
@click.option("--autoprobe/--no-autoprobe", default=None,
              help="with --numvfs: whether new VFs probe host drivers (sriov_drivers_autoprobe; "
                   "--no-autoprobe leaves them driverless, ready to bind, also where the VF "
                   "driver cannot be unbound); default: as the PF has it")
@json_option
def sriov(pf, numvfs, autoprobe, as_json):
    """An SR-IOV PF's VFs: total and current count, each VF's address, IDs, driver and IOMMU
    group; with --numvfs, set the count (VFs bound to vfio-pci are never removed)."""
    from . import binding
    from .pci import resolve

    dev = resolve(pf)
    if autoprobe is not None and numvfs is None:
        raise UsageError("--autoprobe/--no-autoprobe applies when VFs are created",
                         hint="add --numvfs N")
    st = (binding.sriov_state(dev) if numvfs is None else
          binding.set_numvfs(dev, numvfs, autoprobe=autoprobe, progress=_progress(False)))
    if as_json:
        emit_json(st.to_dict())
        return
    click.echo(f"{st.pf} ({st.driver or 'no driver'}): {st.current} of {st.total} VFs")
    for v in st.vfs:
        click.echo(f"  {v['bdf']}  {v['ids']}  group {v['iommu_group']}  "
                   f"{v['driver'] or '(no driver)'}")


@command(main)
@click.option("--timeout", default=10.0, type=Seconds(), show_default=True,
              help="seconds to wait for programs that have a device open to close it")
@json_option
def restore(timeout, as_json):
    """Return every device vfioctl bound (per /run/vfioctl/state.json) to its original driver
    (a device a program still has open: as unbind)."""
    from . import binding

    _print_unbound(binding.restore(progress=_progress(False), timeout=timeout), as_json)


@command(main, "setup-permissions")
@click.option("--group", default="vfio", show_default=True, help="the group to give access")
@json_option
def setup_permissions(group, as_json):
    """Print the udev rules (shipped with vfioctl) that let GROUP's members use VFIO and
    iommufd without root, and what RLIMIT_MEMLOCK needs. Changes nothing: install them as
    root. Binding stays root-only; open, probe, read/write, DMA, selftest and the pytest
    plugin (on pre-bound devices) then work as a member of the group."""
    from .permissions import setup

    out = setup(group)
    if as_json:
        emit_json(out)
        return
    click.echo(f"# {out['rules_file']}")
    click.echo(out["rules"].rstrip())
    click.echo("")
    click.echo("# then, as root:")
    for step in out["steps"]:
        click.echo(f"#   {step}")
    m = out["memlock"]
    click.echo(f"# {m['text']}:")
    click.echo(f"#   {m['limits_conf']}")
    click.echo(f"#   {m['systemd']}")


@command(main)
@click.argument("device", required=False)
@json_option
def doctor(device, as_json):
    """Check this machine (and DEVICE) for VFIO: the IOMMU, vfio-pci, the device cdev with
    iommufd and the legacy group path, and which IOMMU modes can be used; each failure with its
    fix. Exit 0 when at least one mode can be used."""
    from .doctor import diagnose
    from .pci import resolve

    dev = resolve(device) if device else None
    d = diagnose(dev)
    if as_json:
        emit_json(d.to_dict())
    else:
        for f in d.findings:
            click.echo(f"[{f.status}] {f.name}: {f.detail}")
            if not f.ok and f.fix_code == "group":
                click.echo(f"       fix: `vfioctl bind --group {dev.bdf}` (every member is "
                           "recorded and can be returned to its driver)")
            elif not f.ok and f.fix:
                click.echo(f"       fix: {f.fix}")
        click.echo("IOMMU modes:")
        for m in d.modes:
            state = "usable" if m["available"] else f"not available: {m['why_not']}"
            click.echo(f"  {m['mode']:24s} {state}")
        click.echo(f"verdict: {'usable in ' + ', '.join(d.usable_modes) if d.ok else 'not usable'}")
    sys.exit(0 if d.ok else 1)


# --- reset, shell, run ---------------------------------------------------------------------------
@command(main)
@click.argument("device")
@click.option("--hot", is_flag=True, help="PCI hot (secondary bus) reset instead of a function "
                                          "reset")
@open_options
@json_option
def reset(device, hot, iommu_mode, vf_token, as_json):
    """Reset DEVICE: VFIO_DEVICE_RESET, or with --hot VFIO_DEVICE_PCI_HOT_RESET."""
    with open_session(device, iommu_mode, vf_token) as s:
        if hot:
            what = "hot reset (" + ", ".join(s.hot_reset()) + ")"
        else:
            s.reset()
            what = "function reset"
    if as_json:
        emit_json({"device": s.pci.bdf, "iommu_mode": s.iommu_mode,
                   "reset": "hot" if hot else "function", "ok": True})
    else:
        click.echo(f"{s.pci.bdf}: {what} done")


def _namespace(s) -> dict:
    import vfioctl

    ns = {"vfioctl": vfioctl, "session": s, "s": s, "dev": s.device, "ioas": s.ioas,
          "iommufd": s.iommufd, "container": s.container, "dma": s.dma,
          "config": s.device.config, "dma_alloc": s.dma_alloc,
          "irq": s.device.enable_irq, "bus_master": s.device.bus_master}
    present = {r.index for r in s.device.regions()}
    for i in range(6):
        ns[f"bar{i}"] = s.region(i) if i in present else None
    return ns


@command(main)
@click.argument("device")
@open_options
def shell(device, iommu_mode, vf_token):
    """Interactive Python with DEVICE open and ready: dev, bar0..bar5, config, dma_alloc, irq,
    bus_master, dma, session."""
    import code

    with open_session(device, iommu_mode, vf_token) as s:
        ns = _namespace(s)
        bars = ", ".join(k for k in sorted(ns) if k.startswith("bar") and ns[k] is not None)
        banner = (f"vfioctl shell: {s.pci.bdf} ({s.pci.ids}) in IOMMU mode {s.iommu_mode}\n"
                  f"names: dev, {bars}, config, dma_alloc(size), irq(index, count), "
                  "bus_master(), session\nthe session closes when you leave (Ctrl-D)")
        code.interact(banner=banner, local=ns, exitmsg="vfioctl shell: session closed")


@command(main)
@click.argument("script", type=click.Path(dir_okay=False))
@click.argument("device")
@click.argument("args", nargs=-1)
@open_options
def run(script, device, args, iommu_mode, vf_token):
    """Run a bring-up SCRIPT with DEVICE open; it sees the same names as `vfioctl shell`, and
    sys.argv = [SCRIPT, ARGS...]."""
    import runpy
    import traceback

    if not os.path.isfile(script):
        raise UsageError(f"no script {script}", path=script, hint="give the path of a Python file")
    with open_session(device, iommu_mode, vf_token) as s:
        saved = sys.argv
        sys.argv = [script, *args]
        try:
            runpy.run_path(script, init_globals=_namespace(s), run_name="__main__")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, (int, type(None))):  # SystemExit("message")
                click.echo(f"{script}: {exc.code}", err=True)
            if code:
                sys.exit(code)
        except VfioctlError as exc:
            line = _script_lines(exc, script)
            if line:  # which of the script's accesses it was, before the error and its hint
                click.echo(f"{script}, line {line[-1].tb_lineno}:", err=True)
            raise
        except Exception as exc:  # the script's own bug: its traceback, then tear down
            # as `python SCRIPT` shows it: from the script's first frame on (none for a
            # SyntaxError, which names its file and line itself), not runpy's or ours
            frames = _script_lines(exc, script)
            traceback.print_exception(type(exc), exc, frames[0] if frames else None)
            click.echo(f"error: {script} failed; the session was closed", err=True)
            sys.exit(1)
        finally:
            sys.argv = saved


def _script_lines(exc: BaseException, script: str) -> list:
    """The traceback entries of ``exc`` that are in ``script``'s own code, outermost first."""
    out, tb = [], exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == script:
            out.append(tb)
        tb = tb.tb_next
    return out


if __name__ == "__main__":
    main()
