#!/usr/bin/env python3
"""Issue #14's question, measured: would compiled methods meet the targets that Python's own
call costs put out of reach? Compiles scripts/c_methods.c (a CPython extension: a register
accessor with Region.read/write's checks, and a prepared mapping whose map() and unmap() are one
ioctl each) and times it against bench.py's references and vfioctl, interleaved, in one run.
Runs in the test-bed VM, as bench.py does (it binds ivshmem and gives it back):
    scripts/vm-run --kernel 7 -- "$(python3 -c 'import sys;print(sys.executable)')" \
        scripts/c_methods.py
BENCH_N and BENCH_ROUNDS as for bench.py. An experiment: vfioctl has no compiled code.
"""
from __future__ import annotations

import ctypes
import importlib.util
import mmap as _mmap
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (puts the repository on sys.path)
import vfioctl  # noqa: E402


def build(work: Path):
    so = work / ("c_methods" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(["cc", "-O2", "-Wall", "-shared", "-fPIC", "-I",
                    sysconfig.get_paths()["include"], "-o", str(so), str(HERE / "c_methods.c")],
                   check=True)
    spec = importlib.util.spec_from_file_location("c_methods", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def slow(op, offset, width, err):
    raise RuntimeError(f"c_methods: {op} at {offset:#x} width {width}: {err}")


def timed(fn, *args):
    def run():
        t = time.perf_counter()
        for _ in range(bench.N):
            fn(*args)
        return (time.perf_counter() - t) / bench.N
    return run


def twice(a, b):
    def run():
        t = time.perf_counter()
        for _ in range(bench.N):
            a()
            b()
        return (time.perf_counter() - t) / bench.N
    return run


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="vfioctl-cm-") as work:
        cm = build(Path(work))
        with bench.ivshmem_on_vfio_pci() as bdf, vfioctl.open(bdf) as s:
            bar = s.region("bar2")
            fd, off, reg, v = s.device.fd, bar.info.offset, 0x40, 0x5A5A5A5A
            acc = cm.Accessor(fd, off, bar.info.size, bar.info.readable, bar.info.writable, slow)
            print(f"ivshmem, {s.iommu_mode}, {os.uname().release}: N={bench.N}, "
                  f"{bench.ROUNDS} rounds (medians; ratio = first / reference)", flush=True)

            def py_read():
                return bench.pread_ref(fd, off + reg, bench.N)

            def py_write():
                return bench.pwrite_ref(fd, off + reg, v, bench.N)
            c_read, c_write = timed(acc.read, reg, 4), timed(acc.write, reg, v, 4)
            bench.compare("C method read(off, 4)", "os.pread + from_bytes", c_read, py_read,
                          "<= 1.3")
            bench.compare("Region.read(off, 4)", "C method read(off, 4)",
                          timed(bar.read, reg, 4), c_read)
            bench.compare("C method write(off, v, 4)", "os.pwrite + to_bytes", c_write,
                          py_write, "<= 1.3")
            bench.compare("Region.write(off, v, 4)", "C method write(off, v, 4)",
                          timed(bar.write, reg, v, 4), c_write)

            mem = _mmap.mmap(-1, 4096, _mmap.MAP_SHARED | _mmap.MAP_ANONYMOUS)
            addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
            dfd, rm, mp, ru, un = bench.prebuilt(s, addr, 4096)
            length = "length" if s.ioas is not None else "size"
            pair = cm.Pair(dfd, rm, mp, ru, un, getattr(type(un), length).offset, slow)

            def raw():
                return bench.ioctl_ref(dfd, rm, mp, ru, un, bench.N)
            c_pair = twice(pair.map, pair.unmap)
            bench.compare("C prepared map + unmap 4 KiB", "fcntl.ioctl, prebuilt structs",
                          c_pair, raw, "<= 1.3")
            with s.dma.prepare(mem, bench.IOVA) as prep:
                prep.unmap()
                bench.compare("prepared map + unmap 4 KiB", "C prepared map + unmap",
                              twice(prep.map, prep.unmap), c_pair)
            mem.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
