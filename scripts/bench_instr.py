#!/usr/bin/env python3
"""User-space instructions per call of vfioctl's hot paths, counted by callgrind on the host:
the numbers the TCG benchmark's noise hides, repeatable to the instruction.

No device and no iommufd, so the kernel's share drops out and what is left is the Python around
the syscall. A 4 KiB DMA map + unmap: the IOAS's fd is a pipe and its two requests are replaced
(here, in this harness) by FIONREAD, which any pipe answers; rows: the reference
(``fcntl.ioctl`` with prebuilt structs, as bench.py's), a floor (two Python methods doing
nothing but those calls), vfioctl's ``dma.map`` + ``dma.unmap``, its pieces, and a
PreparedMapping's ``map`` + ``unmap`` (``dma.prepare``). A 4-byte ``Region.read``: the
region's fd is /dev/zero; rows: ``os.pread`` + ``int.from_bytes``, a method doing nothing but
those, ``Region.read``. ``vfioctl``, ``prepared`` and ``region_read`` run vfioctl as installed
(compiled, where it was built with its optional extension); ``vfioctl_py``, ``prepared_py`` and
``region_read_py`` run it with the extension hidden, as an install without a compiler has it. A session open + close
(``vfioctl.open(BDF).close()``): a fake sysfs and /dev in a temporary directory (the device on
vfio-pci with cdev vfio0; the nodes are empty files) and the three requests (BIND, IOAS_ALLOC,
ATTACH) replaced by FIONREAD, which a file answers; rows: the same opens, ioctls and closes in
bare Python (C's sequence), a floor that also reads what a PCI address needs to find the cdev
(the driver link, the vfio-dev/ listing), and vfioctl's open + close. Each is (I(N) - I(0)) / N,
and the ratio is to its group's reference.
    python3 scripts/bench_instr.py [ROW...]     # needs valgrind
"""
from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import re
import shutil
import subprocess
import sys
import termios
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: row -> the reference row of its group
ROWS = {"reference": "reference", "floor": "reference", "vfioctl": "reference",
        "vfioctl_py": "reference",
        "export": "reference", "mapping": "reference", "map_ioctl": "reference",
        "unmap_ioctl": "reference", "prepared": "reference", "prepared_py": "reference",
        "pread": "pread", "pread_floor": "pread", "region_read": "pread",
        "region_read_py": "pread",
        "open_bare": "open_bare", "open_floor": "open_bare", "open": "open_bare"}
N = int(os.environ.get("BENCH_N", "5000"))


def run(row: str, n: int) -> None:
    if row.endswith("_py"):  # the row as an install without the extension runs it
        sys.modules["vfioctl._speedups"] = None  # (its import fails)
        row = row[:-3]
    from vfioctl import iommufd, uapi
    from vfioctl.fd import FdOwner
    from vfioctl.iova import DmaSpace, Mapping, buffer_address

    r, _w = os.pipe()
    req = termios.FIONREAD
    mem = mmap.mmap(-1, 4096)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    iova = 1 << 30

    fd = iommufd.IommuFD.__new__(iommufd.IommuFD)  # the IOAS's iommufd: the pipe's read end
    FdOwner.__init__(fd, r, "/dev/iommu")
    fd._ioases = []

    iommufd._IOAS_MAP = iommufd._IOAS_UNMAP = req
    ioas = iommufd.IOAS.__new__(iommufd.IOAS)
    DmaSpace.__init__(ioas)
    ioas.iommufd, ioas.id, ioas._destroyed = fd, 1, False
    mp = uapi.iommu_ioas_map(size=ctypes.sizeof(uapi.iommu_ioas_map), ioas_id=1, user_va=addr,
                             length=4096, iova=iova)
    un = uapi.iommu_ioas_unmap(size=ctypes.sizeof(uapi.iommu_ioas_unmap), ioas_id=1, iova=iova,
                               length=4096)

    class Floor:
        def map(self, buf, at):
            fcntl.ioctl(r, req, mp, True)

        def unmap(self, at):
            fcntl.ioctl(r, req, un, True)

    if row == "reference":
        ioctl = fcntl.ioctl
        for _ in range(n):
            ioctl(r, req, mp, True)
            ioctl(r, req, un, True)
    elif row in ("floor", "vfioctl"):
        space = Floor() if row == "floor" else ioas
        m, u = space.map, space.unmap
        for _ in range(n):
            m(mem, iova)
            u(iova)
    elif row == "prepared":
        prep = ioas.prepare(mem, iova)
        m, u = prep.map, prep.unmap
        u()
        for _ in range(n):
            m()
            u()
    elif row == "export":
        for _ in range(n):
            buffer_address(mem)
    elif row == "mapping":
        for _ in range(n):
            Mapping(iova, 4096, True, True)
    elif row == "map_ioctl":
        f = ioas._map_ioctl
        for _ in range(n):
            f(addr, iova, 4096, True, True)
    elif row == "unmap_ioctl":
        f = ioas._unmap_ioctl
        for _ in range(n):
            f(iova, 4096)
    elif row.startswith("open"):
        open_rows(row, n)
    else:
        read_rows(row, n)


def read_rows(row: str, n: int) -> None:
    from vfioctl import uapi
    from vfioctl.device import Region, RegionInfo

    fd = os.open("/dev/zero", os.O_RDONLY)
    pread, from_bytes = os.pread, int.from_bytes

    class Dev:  # the device the region believes it has
        _fd, path = fd, "/dev/vfio/devices/vfio0"

    region = Region(Dev(), RegionInfo(index=2, size=1 << 20, offset=0, flags=(
        uapi.VFIO_REGION_INFO_FLAG_READ | uapi.VFIO_REGION_INFO_FLAG_WRITE)))

    class Floor:
        def read(self, offset, width=4):
            return from_bytes(pread(fd, width, offset), "little")

    if row == "pread":
        for _ in range(n):
            from_bytes(pread(fd, 4, 64), "little")
    else:
        read = Floor().read if row == "pread_floor" else region.read
        for _ in range(n):
            read(64, 4)


def open_rows(row: str, n: int) -> None:
    import tempfile

    import vfioctl
    from vfioctl import pci, uapi

    bdf = "0000:00:0c.0"
    root = Path(tempfile.mkdtemp(prefix="bench-instr-"))
    sysdev = root / "sys/bus/pci/devices" / bdf
    (root / "sys/bus/pci/drivers/vfio-pci").mkdir(parents=True)
    (sysdev / "vfio-dev/vfio0").mkdir(parents=True)
    (sysdev / "driver").symlink_to("../../drivers/vfio-pci")
    (root / "dev/vfio/devices").mkdir(parents=True)
    node, iommu = root / "dev/vfio/devices/vfio0", root / "dev/iommu"
    node.touch()
    iommu.touch()
    pci.SYSFS, pci.DEVFS = root / "sys", root / "dev"
    req = termios.FIONREAD
    for name in ("VFIO_DEVICE_BIND_IOMMUFD", "IOMMU_IOAS_ALLOC", "VFIO_DEVICE_ATTACH_IOMMUFD_PT"):
        setattr(uapi, name, req)
    node, iommu, sysdev = str(node), str(iommu), str(sysdev)
    bind = uapi.vfio_device_bind_iommufd(argsz=ctypes.sizeof(uapi.vfio_device_bind_iommufd))
    alloc = uapi.iommu_ioas_alloc(size=ctypes.sizeof(uapi.iommu_ioas_alloc))
    attach = uapi.vfio_device_attach_iommufd_pt(
        argsz=ctypes.sizeof(uapi.vfio_device_attach_iommufd_pt))
    o, c, ioctl, rw = os.open, os.close, fcntl.ioctl, os.O_RDWR | os.O_CLOEXEC
    readlink, listdir = os.readlink, os.listdir
    try:
        # one open in every row, before the count: vfioctl imports its modules on first use,
        # and I(0) (run once per group) must hold that, not the first iteration
        vfioctl.open(bdf, iommu_path=iommu).close()
        if row == "open":
            for _ in range(n):
                vfioctl.open(bdf, iommu_path=iommu).close()
            return
        floor = row == "open_floor"
        for _ in range(n):
            if floor:
                readlink(sysdev + "/driver")
                listdir(sysdev + "/vfio-dev")
            i = o(iommu, rw)
            ioctl(i, req, alloc, True)
            d = o(node, rw)
            ioctl(d, req, bind, True)
            ioctl(d, req, attach, True)
            c(d)
            c(i)
    finally:
        shutil.rmtree(root)


def count(row: str, n: int) -> int:
    p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                        os.path.realpath(sys.executable), __file__, "--run", row, str(n)],
                       capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": "0"})  # the same dict probes each run
    return int(re.search(r"Collected : (\d+)", p.stderr)[1])


def main() -> int:
    if sys.argv[1:2] == ["--run"]:
        run(sys.argv[2], int(sys.argv[3]))
        return 0
    rows = sys.argv[1:] or list(ROWS)
    if any(r not in ROWS for r in rows):
        sys.exit(f"usage: {__doc__.rsplit(chr(10), 2)[-2].strip()}\nrows: {', '.join(ROWS)}")
    rows = sorted(set(rows) | {ROWS[r] for r in rows}, key=list(ROWS).index)
    # each group's setup once outside callgrind first: Python writes the bytecode caches of
    # modules changed since their last import then, not inside I(0) only (which would take
    # the compile's cost off every row counted after it)
    for group in {ROWS[r] for r in rows}:
        subprocess.run([os.path.realpath(sys.executable), __file__, "--run", group, "0"],
                       check=True, capture_output=True)
    per, idle = {}, {}  # idle: I(0), the same for every row of a group (the same setup runs)
    for row in rows:
        key = ROWS[row], row.endswith("_py")  # without the extension, setup imports less
        if key not in idle:
            idle[key] = count(row, 0)
        per[row] = (count(row, N) - idle[key]) / N
        ratio = f"{per[row] / per[ROWS[row]]:6.2f}x"
        print(f"{row:14s} {per[row]:9.0f} instructions per iteration {ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
