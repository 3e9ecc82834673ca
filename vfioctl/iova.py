"""IOVA bookkeeping shared by both IOMMU backends: ranges, the allocator, and the parser of
VFIO's info capability chains."""
from __future__ import annotations

import ctypes
import errno
import mmap as _mmap
from dataclasses import dataclass

from . import uapi
from .errors import KernelError, UsageError
from .ioctl import ioctl_filled
from .speedups import compiled


@dataclass(frozen=True)
class IovaRange:
    start: int
    last: int  # inclusive, as the kernel reports it


PAGE_SIZE = _mmap.PAGESIZE
_PAGE_MASK = PAGE_SIZE - 1


@dataclass(frozen=True, init=False, slots=True)
class Mapping:
    """A mapping of a DMA space. Frozen, with slots (the compiled map fills them directly)."""

    iova: int
    length: int
    readable: bool
    writable: bool

    def __init__(self, iova: int, length: int, readable: bool, writable: bool):
        _set(self, "iova", iova)
        _set(self, "length", length)
        _set(self, "readable", readable)
        _set(self, "writable", writable)


_set = object.__setattr__


#: buffers whose buffer is always plain bytes: no view needed to learn their address and size
_PLAIN_BUFFERS = (_mmap.mmap, bytearray)


def buffer_address(buf) -> tuple[int, int, object]:
    """(address, length, keepalive) of a writable buffer-protocol object.

    The keepalive is a ctypes object exporting the buffer: while it lives, a bytearray cannot be
    resized nor an mmap closed under the IOMMU's feet.
    """
    if type(buf) in _PLAIN_BUFFERS:  # the hot path: an mmap or a bytearray
        try:
            keep = ctypes.c_char.from_buffer(buf)  # holds an export of the whole buffer
        except (TypeError, ValueError):  # read-only, closed or empty: the checks below say which
            pass
        else:
            return ctypes.addressof(keep), len(buf), keep
    try:
        view = memoryview(buf)
    except (TypeError, ValueError) as exc:
        what = "a closed" if isinstance(exc, ValueError) else "a"
        raise UsageError(f"cannot map {what} {type(buf).__name__}: it has no buffer",
                         hint="pass a bytearray, mmap or writable memoryview") from None
    if view.readonly:
        raise UsageError(f"cannot map a read-only {type(buf).__name__}",
                         hint="pass a writable buffer (bytearray, mmap, writable memoryview); "
                              "use readable=True, writable=False for a device-read-only mapping")
    if not view.contiguous:
        raise UsageError("cannot map a non-contiguous buffer", hint="pass a contiguous buffer")
    length = view.nbytes
    if length == 0:
        raise UsageError("cannot map an empty buffer", hint="pass a buffer of at least one page")
    keep = (ctypes.c_char * length).from_buffer(view.cast("B"))
    return ctypes.addressof(keep), length, keep


class DmaSpace(compiled.Space if compiled else object):
    """An IO address space that user buffers are mapped into, with its mappings tracked.

    Both IOMMU backends are one: an iommufd IOAS (IOMMU_IOAS_MAP) and a VFIO container
    (VFIO_IOMMU_MAP_DMA). Subclasses supply the usable ranges and the three ioctls; the checks,
    the IOVA allocator and the bookkeeping are here.

    ``map`` and ``unmap`` are compiled where vfioctl was built with its optional extension
    (``vfioctl.speedups``) for a buffer mapped at an explicit IOVA and unmapped by it; the
    compiled paths take their struct layouts from the backend (``_compiled_args``) and hand
    every other call, and every check that fails, to ``_py_map`` and ``_py_unmap``.
    """

    #: how error messages name this space
    label = "the IO address space"
    #: True where iommufd serves the space (an IOAS, or its compat container): it pins the
    #: pages of what it maps, so device memory (a BAR's mmap) does not map (EFAULT)
    pins_pages = False

    def __init__(self):
        self._maps: dict[int, tuple[Mapping, object]] = {}
        #: spare ioctl argument structs of the subclass's map/unmap: a caller pops one (so two
        #: threads never share one) and puts it back; building one costs more than the ioctl
        self._map_args: list = []
        self._unmap_args: list = []
        self._prepared: list[PreparedMapping] = []

    # what a subclass supplies
    def iova_ranges(self) -> tuple[list[IovaRange], int]:
        """The usable IOVA ranges and the required IOVA alignment (1: none)."""
        raise NotImplementedError

    def _map_ioctl(self, addr: int, iova: int, length: int, readable: bool,
                   writable: bool) -> None:
        raise NotImplementedError

    def _unmap_ioctl(self, iova: int, length: int) -> int:
        raise NotImplementedError

    def _unmap_all_ioctl(self) -> int:
        raise NotImplementedError

    def _compiled_args(self) -> tuple | None:
        """For the compiled map and unmap: (the FdOwner whose fd they take, (map request, map
        struct with its constant fields filled, op, the names of its flags, address, IOVA and
        length fields, the flags always set, the read flag, the write flag), (unmap request,
        unmap struct, op, the names of its IOVA and length fields)); None while the space
        cannot map (Python's path, and the kernel, say why)."""
        raise NotImplementedError

    def _prepared_args(self, m: Mapping, addr: int) -> tuple:
        """For a PreparedMapping of ``m`` (of the buffer at ``addr``): the FdOwner whose fd the
        two ioctls take, (request, struct, op) of the map, (request, struct, op, the struct's
        length field, which the kernel writes back) of the unmap."""
        raise NotImplementedError

    def _forget_all(self) -> None:
        """The space is going away: forget its mappings, close its prepared mappings (their
        buffers' exports go with them)."""
        self._maps.clear()
        for p in reversed(self._prepared):
            p._entry = None
        self._prepared.clear()

    # the shared part
    @property
    def mappings(self) -> list[Mapping]:
        return [m for m, _ in self._maps.values()]

    def allocate_iova(self, length: int, *, limit: int | None = None,
                      align: int | None = None) -> int:
        """A free IOVA for ``length`` bytes inside the usable ranges (and below ``limit``)."""
        ranges, alignment = self.iova_ranges()
        align = max(align or PAGE_SIZE, alignment or 1)
        taken = [(m.iova, m.iova + m.length) for m, _ in self._maps.values()]
        taken += [(p.iova, p.iova + p.length) for p in self._prepared]  # held while unmapped
        iova = allocate_iova(ranges, taken, length, align=align, limit=limit)
        if iova is None:
            raise no_room(length, limit, self.label)
        return iova

    def _arm_space(self) -> bool:
        """Give the compiled paths their struct templates (on their first call); False while
        the space cannot map."""
        args = self._compiled_args()
        if args is None:
            return False
        owner, (mreq, marg, _, mfields, fixed, r, w), (ureq, uarg, _, ufields) = args
        mt, ut = type(marg), type(uarg)
        self._arm(owner, Mapping, mreq, bytes(marg), *(getattr(mt, f).offset for f in mfields),
                  fixed, r, w, ureq, bytes(uarg), *(getattr(ut, f).offset for f in ufields))
        return True

    def _map_failed(self, err: int, iova: int, length: int) -> None:
        """Raise for the compiled map's ioctl that the kernel refused (``err``), as _py_map."""
        owner, (_, _, op, *_), _ = self._compiled_args()
        exc = KernelError(op, err, owner.path)
        explain_map_error(exc, iova, length, self.pins_pages)
        raise exc

    def _unmap_failed(self, err: int, iova: int, length: int) -> None:
        """Raise for the compiled unmap's ioctl that the kernel refused, as _py_unmap."""
        owner, _, (_, _, op, _) = self._compiled_args()
        raise KernelError(op, err, owner.path)

    def _py_map(self, buf, iova: int | None = None, *, readable: bool = True,
                writable: bool = True, limit: int | None = None,
                align: int | None = None) -> Mapping:
        """Map a writable buffer at ``iova`` (or one chosen inside the usable ranges, below
        ``limit``, aligned to ``align``). ``readable``/``writable`` are the device's rights.
        Note: intel-iommu (VT-d) maps every present page readable on Linux 6.12
        (``__domain_mapping`` sets DMA_FL_PTE_PRESENT, which is the READ bit), so there a
        write-only mapping can still be read by the device; 7.x enforces it. A read-only mapping
        is enforced on both.
        """
        addr, length, keep = buffer_address(buf)
        try:
            if (addr | length) & _PAGE_MASK:
                raise UsageError(
                    f"buffer at {addr:#x} of {length:#x} bytes is not page aligned "
                    f"({PAGE_SIZE:#x})",
                    hint="use an mmap or session.dma_alloc(size): both are page aligned")
            if not (readable or writable):
                raise UsageError("a mapping must be readable or writable by the device",
                                 hint="pass readable=True and/or writable=True")
            if iova is None:
                iova = self.allocate_iova(length, limit=limit, align=align)
            elif iova & _PAGE_MASK or iova < 0:
                raise UsageError(f"IOVA {iova:#x} is not page aligned ({PAGE_SIZE:#x})",
                                 hint=f"use a multiple of {PAGE_SIZE:#x}")
            elif iova >= _IOVA_END:  # (the struct's u64 would take it modulo 2**64)
                raise outside_iova_space(iova)
            self._map_ioctl(addr, iova, length, readable, writable)
        except BaseException as exc:
            del keep  # release the buffer export now, so that the caller may close its mmap
            if isinstance(exc, KernelError):
                explain_map_error(exc, iova, length, self.pins_pages)
            raise
        m = Mapping(iova, length, readable, writable)
        self._maps[iova] = (m, keep)
        return m

    def prepare(self, buf, iova: int | None = None, *, readable: bool = True,
                writable: bool = True, limit: int | None = None,
                align: int | None = None) -> PreparedMapping:
        """Map ``buf`` as ``map()`` does and return a PreparedMapping of it, whose ``unmap()``
        and ``map()`` unmap and map the same buffer at the same IOVA again, one ioctl each:
        the checks, the IOVA and the ioctls' arguments are done here, once (as the kernel
        selftest library's ``struct dma_region``). For loops that map and unmap a buffer over
        and over; it keeps the buffer from being closed or resized until it is closed."""
        # (Python's map: the prepared mapping takes the address of its ctypes keepalive)
        m = self._py_map(buf, iova, readable=readable, writable=writable, limit=limit,
                         align=align)
        try:
            p = PreparedMapping(self, self._maps[m.iova])
        except BaseException:
            self.unmap(m.iova)
            raise
        self._prepared.append(p)
        return p

    def _py_unmap(self, iova: int, length: int | None = None) -> int:
        """Unmap what was mapped at ``iova``; returns the number of bytes unmapped."""
        maps = self._maps
        if length is None:
            if iova not in maps:
                raise UsageError(f"nothing is mapped at IOVA {iova:#x}",
                                 hint="pass the IOVA a map() returned, or an explicit length")
            length = maps[iova][0].length
            done = self._unmap_ioctl(iova, length)
            del maps[iova]  # exactly one mapping: what map() recorded at this IOVA
            return done
        if not 0 <= iova < _IOVA_END:  # (the struct's u64 would take them modulo 2**64)
            raise outside_iova_space(iova)
        if not 0 < length < _IOVA_END:
            raise UsageError(f"cannot unmap {length:#x} bytes",
                             hint="pass a length from 1 to 2**64 - 1, or none for what map() "
                                  "mapped at the IOVA")
        try:
            done = self._unmap_ioctl(iova, length)
        except KernelError as exc:
            if iova + length > _IOVA_END:
                explain_map_error(exc, iova, length)
            raise
        self._forget_range(iova, length)
        return done

    if compiled is None:
        map, unmap = _py_map, _py_unmap

    def _forget_range(self, iova: int, length: int) -> None:
        """Drop the records of the mappings that start in [iova, iova + length)."""
        maps = self._maps
        for k in [k for k in maps if iova <= k < iova + length]:
            del maps[k]

    def unmap_all(self) -> int:
        """Unmap the whole IOVA space; returns the number of bytes unmapped."""
        done = self._unmap_all_ioctl()
        self._maps.clear()
        return done


class PreparedMapping(compiled.Prepared if compiled else object):
    """A buffer mapped by ``DmaSpace.prepare()``, ready to be unmapped and mapped again at the
    same IOVA with the same rights, one ioctl each (its argument structs are built once: one
    thread at a time). ``mapping`` is the Mapping it makes; ``mapped`` whether the space holds
    it now (``dma.unmap(iova)`` and ``unmap_all()`` unmap it too). Its IOVA stays its own while
    it is unmapped (the allocator skips it; an explicit IOVA is the caller's choice). ``close()``
    unmaps it if mapped and releases the buffer; the space closes it when it closes.
    ``map`` and ``unmap`` are compiled where vfioctl was built with its optional extension
    (``vfioctl.speedups``); ``_py_map`` and ``_py_unmap`` are the same in Python, and take over
    where the compiled ones do not (closed, or the owner's fd closed)."""

    def __init__(self, space: DmaSpace, entry: tuple[Mapping, object]):
        self._space = space
        self._maps = space._maps
        #: what the space records while it is mapped; holds the buffer's export
        self._entry: tuple[Mapping, object] | None = entry
        self.mapping = m = entry[0]
        self.iova, self.length = m.iova, m.length
        (self._owner, (self._map_req, self._map_arg, self._map_op),
         (self._unmap_req, self._unmap_arg, self._unmap_op, self._unmap_field)) = \
            space._prepared_args(m, ctypes.addressof(entry[1]))
        if compiled is not None:  # the compiled paths take the structs' buffers once
            self._arm(self._map_req, self._map_arg, self._unmap_req, self._unmap_arg,
                      getattr(type(self._unmap_arg), self._unmap_field).offset, self.length)

    @property
    def mapped(self) -> bool:
        return self._entry is not None and self._maps.get(self.iova) is self._entry

    @property
    def closed(self) -> bool:
        return self._entry is None

    def _py_map(self) -> Mapping:
        """Map the buffer again (EEXIST from the kernel if something is mapped there)."""
        if self._entry is None:  # (no local holds the entry: a raised error's frames would
            raise self._closed_error()  # keep the buffer's export alive)
        owner = self._owner
        try:
            ioctl_filled(owner._fd, self._map_req, self._map_arg, self._map_op, owner.path)
        except KernelError as exc:
            explain_map_error(exc, self.iova, self.length)
            raise
        self._maps[self.iova] = self._entry
        return self.mapping

    def _py_unmap(self) -> int:
        """Unmap [iova, iova + length); the number of bytes the kernel unmapped."""
        if self._entry is None:
            raise self._closed_error()
        arg, owner = self._unmap_arg, self._owner
        try:
            ioctl_filled(owner._fd, self._unmap_req, arg, self._unmap_op, owner.path)
        finally:  # the kernel writes back what it unmapped: the next call asks the same again
            done = getattr(arg, self._unmap_field)
            if done != self.length:
                setattr(arg, self._unmap_field, self.length)
        if self._maps.pop(self.iova, None) is not self._entry:  # others' mappings in the range
            self._space._forget_range(self.iova, self.length)
        return done

    if compiled is None:
        map, unmap = _py_map, _py_unmap

    def _ioctl_failed(self, what: str, err: int) -> None:
        """Raise for the compiled paths' map or unmap ioctl that the kernel refused (``err``)."""
        if what == "map":
            exc = KernelError(self._map_op, err, self._owner.path)
            explain_map_error(exc, self.iova, self.length)
        else:
            exc = KernelError(self._unmap_op, err, self._owner.path)
        raise exc

    def close(self) -> None:
        """Unmap it if mapped, then release the buffer; safe twice."""
        if self._entry is None:
            return
        if self.mapped:
            self.unmap()  # on failure it stays mapped, and open, with its buffer held
        self._entry = None
        if self in self._space._prepared:
            self._space._prepared.remove(self)

    def _closed_error(self) -> UsageError:
        return UsageError(f"the prepared mapping at IOVA {self.iova:#x} is closed",
                          hint="prepare the buffer again (dma.prepare)")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._entry is None else "mapped" if self.mapped else "unmapped"
        return f"<PreparedMapping IOVA {self.iova:#x} +{self.length:#x}, {state}>"


def allocate_iova(ranges, taken, length: int, *, align: int, limit: int | None = None) -> int | None:
    """The lowest ``align``-aligned IOVA where ``length`` bytes fit inside one of ``ranges``
    (below ``limit``) without overlapping ``taken`` ((start, end) pairs); never IOVA 0, which
    reads like a null pointer. None if there is no room."""
    taken = sorted(taken)
    for r in ranges:
        cur = max(r.start, align)
        cur = -(-cur // align) * align
        end = r.last + 1
        if limit is not None:
            end = min(end, limit)
        for t0, t1 in taken:
            if t1 <= cur or t0 >= end:
                continue
            if t0 >= cur + length:
                break
            cur = -(-t1 // align) * align
        if cur + length <= end:
            return cur
    return None


_IOVA_END = 1 << 64


def explain_map_error(exc: KernelError, iova: int, length: int, pins_pages: bool = False) -> None:
    """A map's (or an unmap's) range past 2**64, whatever the kernel's errno for it (iommufd:
    EOVERFLOW; 6.12's type1: EINVAL): the hint says so. A map's EEXIST: the hint names the
    range and what to do. EFAULT from a space that pins pages (``pins_pages``: iommufd's,
    native or compat): the hint names device memory, which has none to pin (the kernel's
    vfio_dma_mapping_mmio_test expects that failure there)."""
    if iova + length > _IOVA_END:
        exc.hint = (f"IOVA {iova:#x} + {length:#x} bytes runs past the end of the 64-bit IO "
                    "address space: use a range inside the usable ones (iova_ranges())")
    elif exc.errno == errno.EEXIST:
        exc.hint = (f"something is mapped in IOVA {iova:#x}-{iova + length - 1:#x} already: "
                    "unmap it first, or map at another IOVA")
    elif exc.errno == errno.EFAULT and pins_pages:
        exc.hint = ("iommufd pins the pages of what it maps, and device memory (a BAR's mmap) "
                    "has none: map device memory through VFIO's own type1 container (IOMMU "
                    "mode vfio_type1v2_iommu), on a kernel that has one (CONFIG_VFIO_CONTAINER)")


def outside_iova_space(iova: int) -> UsageError:
    return UsageError(f"IOVA {iova:#x} is outside the 64-bit IO address space",
                      hint="use an IOVA inside the usable ranges (iova_ranges())")


def no_room(length: int, limit: int | None, where: str) -> UsageError:
    below = f" below {limit:#x}" if limit is not None else ""
    return UsageError(f"no free IOVA range of {length:#x} bytes{below} in {where}",
                      hint="unmap something first, or map a smaller buffer")


_HDR = ctypes.sizeof(uapi.vfio_info_cap_header)


def parse_caps(buf: bytes, first: int) -> list[tuple[int, int, int]]:
    """(id, version, offset) of each capability of a VFIO info buffer's chain.

    A chain that loops, points outside the buffer or below the fixed header ends in a
    KernelError(EIO) naming the bad offset, never a hang or a misread.
    """
    caps, off, seen = [], first, set()
    while off:
        if off in seen or off < _HDR or off + _HDR > len(buf):
            why = "loops" if off in seen else "points outside the buffer"
            raise KernelError(f"VFIO capability chain {why} (offset {off:#x} of {len(buf)})",
                              errno.EIO)
        seen.add(off)
        hdr = uapi.vfio_info_cap_header.from_buffer_copy(buf, off)
        caps.append((hdr.id, hdr.version, off))
        off = hdr.next
    return caps
