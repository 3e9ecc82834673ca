"""The optional compiled paths (vfioctl/_speedups.c, issue #14): the suite runs with them
built; on a real BAR and a real IOMMU they answer every input, good or bad, exactly as the
pure-Python paths do (the same value, or the same error with the same errno and hint, and the
same effect on the device); and vfioctl with the extension hidden passes the register and
prepared-mapping tests of the suite."""
from __future__ import annotations

import errno
import mmap
import os
import re
import subprocess
import sys

from vmhelpers import EDU_BUF, NO_UNUSED_PLUGINS, Edu

import vfioctl
from vfioctl.device import Region
from vfioctl.iova import DmaSpace, PreparedMapping
from vfioctl.speedups import compiled

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 1 << 20  # ivshmem's BAR2 (the scratch one's: anonymous memory)


def outcome(fn, *args, **kw):
    """What a call did: its value, or its error as the user sees it."""
    try:
        return ("value", fn(*args, **kw))
    except Exception as exc:  # noqa: BLE001 -- any error must match, whatever its type
        return (type(exc).__name__, str(exc), getattr(exc, "errno", None),
                getattr(exc, "hint", None))


def test_the_suite_runs_the_compiled_paths():
    assert compiled is not None, "vfioctl was installed without its extension (pip builds it)"
    assert Region.read is compiled.Registers.read and Region.write is compiled.Registers.write
    assert PreparedMapping.map is compiled.Prepared.map
    assert PreparedMapping.unmap is compiled.Prepared.unmap
    assert DmaSpace.map is compiled.Space.map and DmaSpace.unmap is compiled.Space.unmap


READS = [
    ((0x40,), {}), ((0x40, 1), {}), ((0x41, 1), {}), ((0x42, 2), {}), ((0x48, 8), {}),
    ((0,), {}), ((SIZE - 4,), {}), ((SIZE - 8, 8), {}), ((0x40,), {"width": 2}),
    ((0x40,), {"offset": 8}), ((), {"offset": 0x44}),
    # refused: past the end, negative, misaligned, widths that are none, other types, arity
    ((SIZE,), {}), ((SIZE - 2, 4), {}), ((SIZE - 4, 8), {}), ((-4,), {}), ((0x41,), {}),
    ((0x44, 8), {}), ((0x40, 3), {}), ((0x40, 0), {}), ((0x40, 16), {}), ((0x40, -4), {}),
    ((0x40, "4"), {}), ((0x40, None), {}), ((64.0,), {}), ((True, 1), {}), ((0x40, True), {}),
    ((2 ** 70,), {}), ((-(2 ** 70),), {}), ((0x40, 2 ** 70), {}), ((), {}), ((1, 2, 3), {}),
    ((0x40,), {"bogus": 1}),
]

WRITES = [
    ((0x40, 0x5A5AA5A5), {}), ((0x41, 0xEE, 1), {}), ((0x42, 0xBEEF, 2), {}),
    ((0x48, 0x0123456789ABCDEF, 8), {}), ((0x48, 2 ** 64 - 1, 8), {}), ((SIZE - 4, 7), {}),
    ((0x40, 0), {}), ((0x40,), {"value": 9, "width": 4}), ((0x40, 0x1234), {"width": 2}),
    # refused: values that do not fit or are not ints, and the reads' refusals
    ((0x40, 0x1FF, 1), {}), ((0x40, 2 ** 32), {}), ((0x48, 2 ** 64, 8), {}), ((0x40, -1), {}),
    ((0x40, 1.5), {}), ((0x40, "7"), {}), ((0x40, None), {}), ((0x40, True), {}),
    ((SIZE, 1), {}), ((0x41, 1), {}), ((-4, 1), {}), ((0x40, 1, 3), {}), ((0x40, 1, "4"), {}),
    ((64.0, 1), {}), ((0x40,), {}), ((0x40, 1, 4, 5), {}), ((0x40, 1), {"bogus": 1}),
]


def run_both(region, view, name, args, kw):
    """The call through the compiled method and through the pure-Python one, each on a zeroed
    BAR: (outcome, the BAR's bytes 0x40-0x50 and its last 8 after it), for each."""
    seen = []
    for fn in (getattr(region, name), getattr(region, "_py_" + name)):
        view[:] = bytes(SIZE)
        seen.append((outcome(fn, *args, **kw), bytes(view[0x40:0x50]), bytes(view[-8:])))
    return seen


def test_register_paths_match_the_python_paths_on_every_input(scratch_ivshmem, mode):
    with vfioctl.open(scratch_ivshmem, iommu_mode=mode) as s:
        bar = s.region("bar2")
        m = bar.mmap()
        view = m.u8
        view[:] = bytes(range(256)) * (SIZE // 256)  # distinct bytes: a read shows where it was
        for args, kw in READS:
            c, py = outcome(bar.read, *args, **kw), outcome(bar._py_read, *args, **kw)
            assert c == py, (args, kw)
        assert outcome(bar.read, 0x44, 4) == ("value", 0x47464544)
        assert outcome(bar.read, SIZE - 8, 8) == ("value", 0xFFFEFDFCFBFAF9F8)
        for args, kw in WRITES:
            c, py = run_both(bar, view, "write", args, kw)
            assert c == py, (args, kw)
        view[:] = bytes(SIZE)
        bar.write(0x48, 0x0123456789ABCDEF, 8)  # what the device holds after a compiled write
        assert bytes(view[0x48:0x50]) == bytes.fromhex("efcdab8967452301")
        assert bytes(view[0x40:0x48]) == bytes(8) and bytes(view[0x50:0x58]) == bytes(8)

        # a failed system call: the errno, or a short transfer, raised the same way
        fd = bar._fd
        try:
            for flags, name in ((os.O_RDONLY, "write"), (os.O_WRONLY, "read")):
                bar._fd = os.open("/dev/null", flags)  # pread/pwrite: EBADF, or 0 bytes
                try:
                    args = (0x40, 1) if name == "write" else (0x40,)
                    c = outcome(getattr(bar, name), *args)
                    assert c == outcome(getattr(bar, "_py_" + name), *args)
                    assert c[0] == "KernelError" and c[2] == errno.EBADF, c
                    bar._fd, null = os.open("/dev/null", os.O_RDWR), bar._fd
                    os.close(null)
                    c = outcome(getattr(bar, name), *args)
                    assert c == outcome(getattr(bar, "_py_" + name), *args)
                    if name == "read":  # /dev/null reads nothing
                        assert c[0] == "KernelError" and "short: 0 of 4" in c[1], c
                    else:  # and takes every write
                        assert c == ("value", None)
                finally:
                    os.close(bar._fd)
        finally:
            bar._fd = fd
        assert bar.read(0x48, 8) == 0x0123456789ABCDEF
    # closed with its session: the "closed" error, from both
    for name, args in (("read", (0x40,)), ("write", (0x40, 1))):
        c = outcome(getattr(bar, name), *args)
        assert c == outcome(getattr(bar, "_py_" + name), *args)
        assert c[0] == "EnvironmentProblem" and "closed" in c[1], c


def test_prepared_paths_match_the_python_paths(edu, mode):
    mem = mmap.mmap(-1, 8192)
    py_map = lambda: PreparedMapping._py_map(p)  # noqa: E731
    py_unmap = lambda: PreparedMapping._py_unmap(p)  # noqa: E731
    with vfioctl.open(edu, iommu_mode=mode) as s:
        p = s.dma.prepare(mem)  # mapped
        c, py = outcome(p.map), outcome(py_map)  # mapped already: the kernel's EEXIST
        assert c == py and c[0] == "KernelError" and c[2] == errno.EEXIST, (c, py)
        assert "already" in c[3] and p.mapped
        c = outcome(p.unmap)
        p.map()
        py = outcome(py_unmap)
        assert c == py == ("value", 8192) and not p.mapped
        assert p.mapping not in s.dma.mappings
        c, py = outcome(p.unmap), outcome(py_unmap)  # nothing mapped there now
        assert c == py and not p.mapped, (c, py)
        c = outcome(p.map)
        p.unmap()
        py = outcome(py_map)
        assert c == py == ("value", p.mapping) and p.mapped and p.mapping in s.dma.mappings
        # someone else's mapping in its range: the kernel unmaps it too, and both forget it
        p.unmap()
        for unmap in (p.unmap, py_unmap):
            other = mmap.mmap(-1, 4096)
            m = s.dma.map(other, p.iova + 4096)
            assert unmap() == 4096 and m not in s.dma.mappings and not p.mapped
            s.dma.map(other, p.iova + 4096)  # the kernel agrees: it is free again
            s.dma.unmap(p.iova + 4096)
            other.close()
        p.map()
        dma = s.dma
    assert p.closed and dma.mappings == []
    for c_fn, py_fn in ((p.map, py_map), (p.unmap, py_unmap)):
        c = outcome(c_fn)
        assert c == outcome(py_fn) and c[0] == "UsageError" and "closed" in c[1], c
    mem.close()


def test_dma_map_and_unmap_match_the_python_paths(edu, mode):
    """``dma.map``/``dma.unmap`` compiled and in Python, on the same space, for every input:
    the same Mapping or the same error; a compiled mapping is the IOMMU's (the device's DMA
    lands in the buffer, and after the compiled unmap it does not), holds its buffer while
    mapped and lets it go when unmapped; a refusal of the kernel is raised the same way."""
    iova = 0x700000
    mem, spare = mmap.mmap(-1, 8192), mmap.mmap(-1, 4096)
    closed, ro = mmap.mmap(-1, 4096), mmap.mmap(-1, 4096, prot=mmap.PROT_READ)
    closed.close()
    cases = [
        ((mem, iova), {}), ((mem,), {"iova": iova}), ((mem, iova), {"readable": False}),
        ((mem, iova), {"writable": False}), ((mem, iova), {"readable": 0, "writable": 1}),
        ((mem, iova), {"limit": 1 << 20, "align": 1 << 21}),  # both ignored at an explicit IOVA
        ((memoryview(mem)[4096:], iova), {}), ((bytearray(8192), iova), {}),
        # refused, by vfioctl or by the kernel
        ((mem, iova), {"readable": False, "writable": False}), ((mem, iova + 1), {}),
        ((mem, -4096), {}), ((mem, 1 << 64), {}), ((mem, 1 << 63), {}), ((mem, "7"), {}),
        ((mem, float(iova)), {}), ((mem, True), {}), ((memoryview(mem)[::2], iova), {}),
        ((memoryview(mem)[:0], iova), {}), ((bytearray(), iova), {}), ((closed, iova), {}),
        ((ro, iova), {}), ((b"\0" * 4096, iova), {}), ((mem, iova), {"bogus": 1}),
        ((mem, iova, 5), {}), ((), {}),
    ]
    with vfioctl.open(edu, iommu_mode=mode) as s:
        dma = s.dma
        for args, kw in cases:
            seen = []
            for fn in (dma.map, dma._py_map):
                seen.append((outcome(fn, *args, **kw), dma.mappings))
                if seen[-1][0][0] == "value":
                    assert dma.unmap(seen[-1][0][1].iova) == seen[-1][0][1].length
            assert seen[0] == seen[1], (args, kw, seen)
            assert dma.mappings == []
        del cases, args, kw  # (their memoryviews hold mem)
        # the kernel's refusal: something mapped there already (EEXIST, and the same hint)
        dma.map(spare, iova)
        probe = mmap.mmap(-1, 4096)
        c, py = outcome(dma.map, probe, iova), outcome(dma._py_map, probe, iova)
        assert c == py and c[0] == "KernelError" and c[2] == errno.EEXIST, (c, py)
        assert "already" in c[3]
        probe.close()  # neither failure kept the buffer's export
        assert dma.unmap(iova) == 4096 and dma.mappings == []
        # unmaps that are refused (nothing recorded there, bad arguments), and the forms
        for args in ((iova + 4096,), ("7",), (iova, 4096, 1), (), (1 << 64, 4096),
                     (-4096, 4096), (iova, 0), (iova, 1 << 64), (iova, -4096)):
            c, py = outcome(dma.unmap, *args), outcome(dma._py_unmap, *args)
            assert c == py and c[0] != "value", (args, c, py)
        for args in ((iova, None), (iova, 4096)):
            dma.map(spare, iova)
            assert dma.unmap(*args) == 4096 and dma.mappings == [], args
        # the mapping gone behind vfioctl's back: the kernel's answer, and the record after it
        seen = []
        for unmap in (dma.unmap, dma._py_unmap):
            m = dma.map(spare, iova)
            dma._unmap_ioctl(iova, 4096)
            seen.append((outcome(unmap, iova), dma.mappings))
            if dma.mappings:
                dma._forget_range(iova, 4096)
        assert seen[0] == seen[1], seen
        if mode == "iommufd":  # the IOAS: ENOENT, and the record stays
            assert seen[0][0][:3] == ("KernelError", seen[0][0][1], errno.ENOENT), seen
            assert seen[0][1] == [m]
        else:  # a container (VFIO's or iommufd's compat one) answers 0 bytes: the record goes
            assert seen[0] == (("value", 0), []), seen

        # the device: DMA into a buffer the compiled map mapped, and none after its unmap
        s.device.bus_master(True)
        e = Edu(s)
        src = s.dma_alloc(4096, iova=0x100000)
        src.write(b"\x5a" * 4096)
        e.dma(src.iova, EDU_BUF, 4096, to_ram=False)
        m = dma.map(mem, iova)
        assert type(dma._maps[iova][1]) is compiled.Export and dma._armed
        e.dma(EDU_BUF, iova + 4096, 4096, to_ram=True)
        assert mem[4096:] == b"\x5a" * 4096 and mem[:4096] == bytes(4096)
        try:
            mem.close()
            raise AssertionError("a mapped buffer closed")
        except BufferError:
            pass
        assert dma.unmap(m.iova) == 8192 and dma.mappings == [src.mapping]
        mem[4096:] = bytes(4096)
        e.dma(EDU_BUF, iova + 4096, 4096, to_ram=True)  # unmapped: the write goes nowhere
        assert mem[4096:] == bytes(4096)
        mem.close()  # unmapped: its export went with the record
    spare.close(), ro.close()


HIDE = ("import sys; sys.modules['vfioctl._speedups'] = None; import pytest; "
        "from vfioctl.device import Region; from vfioctl.iova import DmaSpace, PreparedMapping; "
        "assert Region.read is Region._py_read and PreparedMapping.map is PreparedMapping._py_map;"
        " assert DmaSpace.map is DmaSpace._py_map; sys.exit(pytest.main(sys.argv[1:]))")


def test_without_the_extension_the_register_and_mapping_tests_pass(tmp_path):
    """vfioctl as an install without a compiler has it: the same tests (registers, DMA maps by
    the device, prepared mappings, lifetimes), in a pytest whose import of the extension
    fails."""
    env = dict(os.environ, VFIOCTL_VM_WORKDIR=str(tmp_path))
    p = subprocess.run(
        [sys.executable, "-c", HIDE, "tests/vm/test_core.py", "tests/vm/test_dma_irq_reset.py",
         "tests/vm/test_lifetimes.py", "-k",
         "(test_core or prepared or test_lifetimes or dma_ram_to or map_errors or "
         "close_unmaps or write_only_mappings) and not cli and not host_pattern",
         "--vm", "-p", "no:cacheprovider", *NO_UNUSED_PLUGINS, "-q"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    verdict = re.search(r"^vm: (\d+) passed, (\d+) failed$", out, re.M)
    assert verdict and int(verdict[1]) >= 20 and verdict[2] == "0", out[-4000:]
