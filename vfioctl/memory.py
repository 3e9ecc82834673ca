"""Page-aligned anonymous buffers for DMA: base pages, transparent huge pages, or hugetlb pages.

The kinds are the kernel's vfio_dma_mapping_test's: ``None`` (4 KiB pages, shared anonymous
memory), ``"thp"`` (private anonymous memory advised MADV_HUGEPAGE: THP does not back shared
anonymous memory unless shmem_enabled says so), ``"2M"`` and ``"1G"`` (MAP_HUGETLB with the page
size in the flags; the pool is reserved when the buffer is made, so an empty pool fails here, not
at the first DMA).
"""
from __future__ import annotations

import errno
import mmap as _mmap
from pathlib import Path

from .errors import EnvironmentProblem, UsageError
from .iova import PAGE_SIZE

MAP_HUGETLB = 0x40000  # <asm-generic/mman-common.h>; Python's mmap module does not export it
MAP_HUGE_SHIFT = 26  # <asm-generic/hugetlb_encode.h>
THP_SIZE = 2 << 20

#: hugepages= values: the page size (0: base pages, THP: advised, not guaranteed)
HUGEPAGE_KINDS = {None: PAGE_SIZE, "thp": THP_SIZE, "2M": 2 << 20, "1G": 1 << 30}
SYS_MM = Path("/sys/kernel/mm")


def page_size(hugepages: str | None) -> int:
    """The size a buffer of this kind is rounded up to."""
    if hugepages not in HUGEPAGE_KINDS:
        raise UsageError(f"unknown hugepages kind {hugepages!r}",
                         hint="use None (4 KiB pages), 'thp', '2M' or '1G'")
    return HUGEPAGE_KINDS[hugepages]


def _pool(size: int) -> Path:
    return SYS_MM / f"hugepages/hugepages-{size >> 10}kB/nr_hugepages"


def _thp_mode() -> str | None:
    """The bracketed word of transparent_hugepage/enabled, None without THP."""
    try:
        text = (SYS_MM / "transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    return text[text.index("[") + 1: text.index("]")] if "[" in text else None


def alloc(size: int, hugepages: str | None = None) -> _mmap.mmap:
    """A zeroed anonymous buffer of ``size`` bytes rounded up to the kind's page size."""
    if size <= 0:
        raise UsageError(f"DMA size {size} is not positive", hint="ask for at least 1 byte")
    page = page_size(hugepages)
    length = -(-size // page) * page
    if hugepages is None:
        return _mmap.mmap(-1, length, _mmap.MAP_SHARED | _mmap.MAP_ANONYMOUS)
    if hugepages == "thp":
        mode = _thp_mode()
        if mode in (None, "never"):
            raise EnvironmentProblem(
                "transparent huge pages are " + ("not in this kernel" if mode is None
                                                 else "disabled"),
                path=str(SYS_MM / "transparent_hugepage/enabled"),
                hint="set it to 'madvise' or 'always' (a kernel with "
                     "CONFIG_TRANSPARENT_HUGEPAGE), or use hugetlb pages")
        mem = _mmap.mmap(-1, length, _mmap.MAP_PRIVATE | _mmap.MAP_ANONYMOUS)
        try:
            mem.madvise(_mmap.MADV_HUGEPAGE)
        except OSError as exc:
            mem.close()
            raise EnvironmentProblem(f"madvise(MADV_HUGEPAGE) failed: {exc.strerror}",
                                     errno=exc.errno, op="madvise") from None
        return mem
    pool = _pool(page)
    if not pool.exists():
        raise EnvironmentProblem(f"this kernel has no {hugepages} hugetlb pages", path=str(pool),
                                 hint="use a page size the CPU and kernel offer (see "
                                      f"{SYS_MM / 'hugepages'}), or 'thp'")
    flags = (_mmap.MAP_SHARED | _mmap.MAP_ANONYMOUS | MAP_HUGETLB
             | (page.bit_length() - 1) << MAP_HUGE_SHIFT)
    try:
        return _mmap.mmap(-1, length, flags)
    except OSError as exc:
        if exc.errno != errno.ENOMEM:
            raise EnvironmentProblem(f"mmap of {length:#x} bytes of {hugepages} hugetlb pages "
                                     f"failed: {exc.strerror}", errno=exc.errno, op="mmap",
                                     path=str(pool)) from None
        free = _read_int(pool.with_name("free_hugepages"))
        raise EnvironmentProblem(
            f"not enough free {hugepages} hugetlb pages for {length >> 20} MiB "
            f"({length // page} needed, {free if free is not None else '?'} free)",
            errno=exc.errno, op="mmap", path=str(pool),
            hint=f"reserve more: write the page count to {pool}"
                 + (" (/proc/sys/vm/nr_hugepages for the default size)"
                    if page == 2 << 20 else "")) from None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None
