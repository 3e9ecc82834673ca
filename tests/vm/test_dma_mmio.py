"""A BAR's mmap (device memory) mapped into the DMA space, as the kernel's
vfio_dma_mapping_mmio_test: the whole BAR, its first page, and the whole BAR mmapped at a
virtual address deliberately off the alignment a huge mapping wants (1 GiB + one page), in every
IOMMU mode the booted kernel offers. VFIO's type1 container maps and unmaps it (the kernel
reports every byte unmapped); iommufd, native and compat, pins user pages and device memory has
none: the map fails, leaves nothing behind, and the error says what maps it."""
from __future__ import annotations

import ctypes
import errno
import mmap

import pytest
from vmhelpers import TYPE1_MODES

import vfioctl
from vfioctl.errors import KernelError

GIB = 1 << 30
MAP_FIXED, PROT_NONE = 0x10, 0  # <sys/mman.h>; the mmap module exports neither

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


def largest_mapped_bar(s):
    """The largest BAR that is mmappable, readable and writable (the kernel test's pick)."""
    want = 0x7  # VFIO_REGION_INFO_FLAG_READ | WRITE | MMAP
    bars = [r for r in s.device.regions() if r.index <= 5 and r.flags & want == want
            and r.size]
    assert bars, "the device has a mmappable BAR"
    return s.region(max(bars, key=lambda r: r.size).index)


@pytest.fixture
def bar(ivshmem, mode):
    """(session, region, its mmap) of ivshmem's largest mmappable BAR (BAR2, 1 MiB)."""
    with vfioctl.open(ivshmem, iommu_mode=mode) as s:
        region = largest_mapped_bar(s)
        mapped = region.mmap()
        try:
            yield s, region, mapped.areas[0][1]
        finally:
            mapped.close()


def map_device_memory(s, mode, buf, length):
    """Map ``buf`` (device memory of ``length`` bytes) and unmap it again where the mode can;
    where it cannot, the kernel's refusal, with nothing left mapped at that IOVA."""
    iova = s.dma.allocate_iova(length)
    if mode in TYPE1_MODES:
        m = s.dma.map(buf, iova)
        assert (m.iova, m.length) == (iova, length)
        with pytest.raises(KernelError) as taken:  # the kernel holds the range: it says so
            s.dma.map(mmap.mmap(-1, mmap.PAGESIZE), iova)
        assert taken.value.errno == errno.EEXIST
        assert s.dma.unmap(iova) == length  # the kernel unmapped every byte of it
        assert s.dma.mappings == []
        return
    with pytest.raises(KernelError) as refused:
        s.dma.map(buf, iova)
    assert refused.value.errno == errno.EFAULT, refused.value
    assert "device memory" in refused.value.hint and "vfio_type1v2_iommu" in refused.value.hint
    assert s.dma.mappings == []
    ram = mmap.mmap(-1, length)  # nothing of the refused map holds the range
    assert s.dma.map(ram, iova).iova == iova
    assert s.dma.unmap(iova) == length


def test_map_full_bar(bar, mode):
    s, region, mm = bar
    map_device_memory(s, mode, mm, region.info.size)


def test_map_partial_bar(bar, mode):
    s, region, mm = bar
    assert region.info.size >= 2 * mmap.PAGESIZE
    with memoryview(mm)[:mmap.PAGESIZE] as page:
        map_device_memory(s, mode, page, mmap.PAGESIZE)


def test_map_bar_misaligned(bar, mode):
    """The BAR mmapped at 1 GiB + one page of a reserved range: no huge page of the BAR lines
    up with its virtual address."""
    s, region, _mm = bar
    size = min(region.info.size, GIB)
    base = _libc.mmap(None, size + GIB, PROT_NONE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                      -1, 0)
    assert base not in (None, _MAP_FAILED), ctypes.get_errno()
    try:
        want = ((base + GIB - 1) & ~(GIB - 1)) + mmap.PAGESIZE
        got = _libc.mmap(want, size, mmap.PROT_READ | mmap.PROT_WRITE,
                         mmap.MAP_SHARED | MAP_FIXED, s.device.fd, region.info.offset)
        assert got == want, ctypes.get_errno()
        view = (ctypes.c_char * size).from_address(got)
        map_device_memory(s, mode, view, size)
        del view
    finally:
        _libc.munmap(base, size + GIB)


def _vfio_mappings() -> list[str]:
    """This process's mmaps of a VFIO device: a cdev's, or a group's device fd's (not any path
    with "vfio" in it: vfioctl's own extension, vfioctl/_speedups.*.so, is mapped too)."""
    with open("/proc/self/maps") as f:
        fields = [line.split(None, 5) for line in f]
    return [f[5] for f in fields if len(f) == 6 and f[5].startswith(("/dev/vfio/",
                                                                      "anon_inode:[vfio"))]


def test_a_bar_left_mapped_goes_with_the_session(ivshmem, mode):
    """A BAR mapped for DMA and never unmapped (or whose map failed): closing the session
    unmaps it from the IOMMU and from the process, and the device opens again."""
    assert _vfio_mappings() == []
    with vfioctl.open(ivshmem, iommu_mode=mode) as s:
        mm = largest_mapped_bar(s).mmap().areas[0][1]
        assert len(_vfio_mappings()) == 1
        try:
            s.dma.map(mm)
        except KernelError as exc:
            assert mode not in TYPE1_MODES and exc.errno == errno.EFAULT
        assert len(s.dma.mappings) == (mode in TYPE1_MODES)
        del mm
    assert _vfio_mappings() == []  # the BAR's mmap went with the session
    with vfioctl.open(ivshmem, iommu_mode=mode) as s:
        assert s.dma.mappings == []
        assert len(largest_mapped_bar(s).mmap().areas) == 1
