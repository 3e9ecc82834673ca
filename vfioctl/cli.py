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


def fail(exc: VfioctlError, as_json: bool) -> None:
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


def int_arg(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a number",
                         hint=f"give the {what} in decimal or 0x-prefixed hex") from None


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="vfioctl")
def main():
    """Drive PCI devices through VFIO device cdevs and iommufd.

    DEVICE is a PCI address (0000:01:00.0 or 01:00.0), a cdev name (vfio0) or a cdev path
    (/dev/vfio/devices/vfio0).
    """


# --- probe ---------------------------------------------------------------------------------------
@command(main)
@click.argument("device")
@json_option
def probe(device, as_json):
    """Prove DEVICE's cdev refuses everything until BIND_IOMMUFD, and works after it."""
    from .pci import resolve
    from .probe import probe as run_probe

    report = run_probe(resolve(device))
    if as_json:
        emit_json(report.to_dict())
    else:
        rows = [(c.name, c.expected, c.observed, "PASS" if c.ok else "FAIL") for c in report.checks]
        header = ("check", "expected", "observed", "result")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
        click.echo(f"device {report.device}  cdev {report.cdev}  devid {report.devid}")
        click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for r in rows:
            click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)))
        failed = sum(not c.ok for c in report.checks)
        click.echo(f"{len(rows) - failed} passed, {failed} failed")
    sys.exit(0 if report.ok else 1)


# --- info ----------------------------------------------------------------------------------------
def _flags(names) -> str:
    return "|".join(names) or "-"


@command(main)
@click.argument("device")
@json_option
def info(device, as_json):
    """Device flags, regions (size, offset, flags, capabilities), IRQs and hot-reset scope."""
    from . import session as _session

    with _session.open(device) as s:
        d = s.device.info()
        regions = s.device.regions()
        irqs = s.device.irqs()
        try:
            hot = s.device.hot_reset_info()
            hot_err = None
        except VfioctlError as exc:
            hot, hot_err = None, errno_name(exc.errno)
    if as_json:
        emit_json({
            "device": s.pci.bdf, "cdev": s.device.path, "devid": s.devid,
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
    click.echo(f"{s.pci.bdf}  {s.pci.ids}  cdev {s.device.path}  devid {s.devid}")
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
        kind = "devid" if hot.uses_devid else "group"
        owned = ", all owned" if hot.all_owned else ""
        click.echo(f"hot reset: {len(hot.devices)} device(s) affected{owned}: " + ", ".join(
            f"{x.bdf} ({kind} {x.devid})" for x in hot.devices))


# --- region access ---------------------------------------------------------------------------------
width_option = click.option("--width", "-w", type=click.Choice(["1", "2", "4", "8"]), default="4",
                            show_default=True, help="access width in bytes")
mmap_option = click.option("--mmap", "use_mmap", is_flag=True,
                           help="access through an mmap of the region, not pread/pwrite")


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
@json_option
def read(device, region, offset, width, count, use_mmap, as_json):
    """Read COUNT values of WIDTH bytes from REGION at OFFSET (config, bar0..bar5, rom, vga, N)."""
    from . import session as _session

    off, w = int_arg(offset, "offset"), int(width)
    if count < 1:
        raise UsageError(f"--count {count} is not positive", hint="use --count 1 or more")
    with _session.open(device) as s:
        reg, acc = _accessor(s, region, use_mmap)
        values = [acc.read(off + i * w, w) for i in range(count)]
    if as_json:
        emit_json({"device": s.pci.bdf, "region": reg.name, "offset": off, "width": w,
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
@json_option
def write(device, region, offset, values, width, use_mmap, as_json):
    """Write VALUES (WIDTH bytes each, consecutively) to REGION at OFFSET."""
    from . import session as _session

    off, w = int_arg(offset, "offset"), int(width)
    nums = [int_arg(v, "value") for v in values]
    with _session.open(device) as s:
        reg, acc = _accessor(s, region, use_mmap)
        for i, v in enumerate(nums):
            acc.write(off + i * w, v, w)
    if as_json:
        emit_json({"device": s.pci.bdf, "region": reg.name, "offset": off, "width": w,
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
@json_option
def dump(device, region, offset, length, use_mmap, as_json):
    """Hexdump LENGTH bytes of REGION from OFFSET (default: up to 256 bytes)."""
    from . import session as _session

    off = int_arg(offset, "offset")
    with _session.open(device) as s:
        reg, acc = _accessor(s, region, use_mmap)
        n = int_arg(length, "length") if length is not None else max(min(reg.size - off, 256), 1)
        data = acc.read_bytes(off, n)
    if as_json:
        emit_json({"device": s.pci.bdf, "region": reg.name, "offset": off, "length": len(data),
                   "data": data.hex()})
    else:
        click.echo("\n".join(hexdump(data, off)))


if __name__ == "__main__":
    main()
