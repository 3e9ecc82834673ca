"""The top of the IO address space, as the kernel's vfio_dma_map_limit_test: one page mapped at
the last page of the last usable IOVA range unmaps whole, by its range and by unmap-all; a
range that runs past 2**64 is refused by the map and by the unmap, in every IOMMU mode the
booted kernel offers, with the kernel's errno and a hint that says why.

The kernel test expects EOVERFLOW for the overflow in every mode; the bed's kernels answer
EOVERFLOW through iommufd (native and compat) and EINVAL through VFIO's own type1 container
(6.12: Debian's and ours; 7.3 in the bed has no legacy container)."""
from __future__ import annotations

import errno
import mmap

import pytest
from vmhelpers import TYPE1_MODES

import vfioctl
from vfioctl.errors import KernelError

P = mmap.PAGESIZE
TOP = ((1 << 64) - 1) & ~(P - 1)  # the last page of the 64-bit IOVA space


@pytest.fixture
def top(edu, mode):
    """(session, a 2-page buffer, the IOVA of the last page of the last usable range)."""
    with vfioctl.open(edu, iommu_mode=mode) as s:
        ranges, _align = s.dma.iova_ranges()
        buf = mmap.mmap(-1, 2 * P)
        yield s, buf, ranges[-1].last & ~(P - 1)
        s.dma.unmap_all()  # nothing may keep the buffer exported past here
        buf.close()


def test_a_page_at_the_last_iova_unmaps_whole(top, mode):
    s, buf, last = top
    with memoryview(buf)[:P] as page:
        assert s.dma.map(page, last).iova == last
        assert s.dma.unmap(last) == P  # the kernel reports the one page
        assert s.dma.mappings == []
        s.dma.map(page, last)
        assert s.dma.unmap_all() == P
        assert s.dma.mappings == []


def test_a_range_past_the_end_of_the_iova_space_is_refused(top, mode):
    s, buf, _last = top
    want = errno.EINVAL if mode in TYPE1_MODES else errno.EOVERFLOW
    hint = (f"IOVA {TOP:#x} + {2 * P:#x} bytes runs past the end of the 64-bit IO address "
            "space: use a range inside the usable ones (iova_ranges())")
    with pytest.raises(KernelError) as mapped:
        s.dma.map(buf, TOP)
    assert mapped.value.errno == want and mapped.value.hint == hint, mapped.value
    assert s.dma.mappings == []
    with pytest.raises(KernelError) as unmapped:
        s.dma.unmap(TOP, 2 * P)
    assert unmapped.value.errno == want and unmapped.value.hint == hint, unmapped.value
    assert s.dma.map(buf).length == 2 * P  # the space is unharmed
