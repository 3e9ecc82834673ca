#!/usr/bin/env python3
"""Benchmark vfioctl against bare Python and against C, side by side in one run, as ratios.

Runs inside the test-bed VM (it binds ivshmem to vfio-pci and gives it back):
    scripts/vm-run --kernel 7 -- "$(python3 -c 'import sys;print(sys.executable)')" scripts/bench.py

The C reference (scripts/bench_ref.c) is compiled at the start against the booted kernel's
exported headers ($VFIOCTL_KERNEL_HEADERS, which scripts/vm-run sets for our kernels; else the
system's). Each row times the same operation through vfioctl and through its reference, in
interleaved rounds, and reports medians and the median of the per-round ratios vfioctl /
reference (so < 1 is faster). The C program gets the Python session's fds, so both touch the same
device, IOAS or container. Device: ivshmem's BAR2 (host RAM behind the BAR: the access cost is
ours, not an emulated register's). Absolute times under TCG mean little; ratios from the same
run do.

``--json`` prints the rows as JSON. BENCH_N scales the operation counts (default 2000; the suite
runs a smoke run with a tiny N: speed is never asserted), BENCH_ROUNDS the rounds (7),
BENCH_LARGE_MB the large-map size (256), BENCH_ONLY a comma-separated choice of row groups
(registers, maps, large, open, startup; default all).
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import mmap as _mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import vfioctl  # noqa: E402
from vfioctl import binding, discovery, uapi  # noqa: E402
from vfioctl.container import IOMMU_TYPES  # noqa: E402
from vfioctl.pci import PciDevice  # noqa: E402

N = int(os.environ.get("BENCH_N", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
LARGE = int(os.environ.get("BENCH_LARGE_MB", "256")) << 20
AS_JSON = "--json" in sys.argv
GROUPS = ("registers", "maps", "large", "open", "startup")
ONLY = [g for g in os.environ.get("BENCH_ONLY", ",".join(GROUPS)).split(",") if g]
if any(g not in GROUPS for g in ONLY):
    sys.exit(f"BENCH_ONLY: choose among {', '.join(GROUPS)}")
IVSHMEM = "1af4:1110"
#: the reference of the floor rows: the least a Python API can cost (a method call around the
#: bare calls), measured in the same run as the other references
FLOOR_METHOD = "a bare method (floor)"
IOVA = 1 << 30

ROWS: list[dict] = []
HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
HUGEPAGES_WERE = HUGEPAGES.read_text().strip() if HUGEPAGES.exists() else "0"


def say(msg: str) -> None:
    if not AS_JSON:
        print(msg, flush=True)


def compare(name: str, ref_name: str, ours, ref, target: str = "") -> None:
    """ours() and ref() each return seconds per operation; interleaved rounds, medians."""
    o_t, r_t, ratios = [], [], []
    for _ in range(ROUNDS):
        o, r = ours(), ref()
        o_t.append(o)
        r_t.append(r)
        ratios.append(o / r)
    row = {"operation": name, "reference": ref_name, "vfioctl_us": statistics.median(o_t) * 1e6,
           "reference_us": statistics.median(r_t) * 1e6, "ratio": statistics.median(ratios),
           "target": target}
    ROWS.append(row)
    say(f"{name:38s} {ref_name:26s} {row['vfioctl_us']:10.2f} {row['reference_us']:10.2f} "
        f"{row['ratio']:6.2f}x  {target}")


# --- the C reference -------------------------------------------------------------------------
def build_c(work: Path) -> Path:
    headers = os.environ.get("VFIOCTL_KERNEL_HEADERS")
    exe = work / "bench_ref"
    cmd = ["cc", "-O2", "-Wall", "-o", str(exe), str(HERE / "bench_ref.c")]
    if headers:
        cmd[1:1] = ["-I", headers]
    subprocess.run(cmd, check=True)
    return exe


class CRef:
    def __init__(self, exe: Path, fds: list[int]):
        self.exe, self.fds = exe, fds

    def run(self, *args) -> dict:
        p = subprocess.run([str(self.exe), *map(str, args)], capture_output=True, text=True,
                           pass_fds=self.fds)
        if p.returncode:
            raise SystemExit(f"bench_ref {' '.join(map(str, args))}: {p.stderr.strip()}")
        return json.loads(p.stdout)

    def per_op(self, *args) -> float:
        return self.run(*args)["ns"] / 1e9


# --- the bare-Python references (scripts/c_methods.py times against the same) ---------------
def pread_ref(fd: int, pos: int, n: int) -> float:
    """Seconds per 4-byte register read as a script without vfioctl does it."""
    pread, frm, t = os.pread, int.from_bytes, time.perf_counter()
    for _ in range(n):
        frm(pread(fd, 4, pos), "little")
    return (time.perf_counter() - t) / n


def pwrite_ref(fd: int, pos: int, v: int, n: int) -> float:
    """Seconds per 4-byte register write as a script without vfioctl does it."""
    pwrite, t = os.pwrite, time.perf_counter()
    for _ in range(n):
        pwrite(fd, v.to_bytes(4, "little"), pos)
    return (time.perf_counter() - t) / n


def ioctl_ref(fd: int, rm: int, mp, ru: int, un, n: int) -> float:
    """Seconds per map + unmap through ``fcntl.ioctl`` with prebuilt structs."""
    ioctl, t = fcntl.ioctl, time.perf_counter()
    for _ in range(n):
        ioctl(fd, rm, mp)
        ioctl(fd, ru, un)
    return (time.perf_counter() - t) / n


# --- rows ------------------------------------------------------------------------------------
def register_rows(s, c: CRef) -> None:
    bar = s.region("bar2")
    fd, off = s.device.fd, bar.info.offset
    n, reg = N, 0x40
    # every loop is a plain for loop with the call in it: the loop costs the same on both sides

    def ours_read():
        rd, t = bar.read, time.perf_counter()
        for _ in range(n):
            rd(reg, 4)
        return (time.perf_counter() - t) / n

    def py_read():
        return pread_ref(fd, off + reg, n)

    def ours_write():
        wr, t = bar.write, time.perf_counter()
        for _ in range(n):
            wr(reg, 0x5A5A5A5A, 4)
        return (time.perf_counter() - t) / n

    def py_write():
        return pwrite_ref(fd, off + reg, 0x5A5A5A5A, n)

    class Bare:  # the floor: a method that does nothing but the reference's calls, unchecked
        def read(self, offset, width=4):
            return int.from_bytes(os.pread(fd, width, off + offset), "little")

        def write(self, offset, value, width=4):
            os.pwrite(fd, value.to_bytes(width, "little"), off + offset)

    def floor_read():
        rd, t = Bare().read, time.perf_counter()
        for _ in range(n):
            rd(reg, 4)
        return (time.perf_counter() - t) / n

    def floor_write():
        wr, t = Bare().write, time.perf_counter()
        for _ in range(n):
            wr(reg, 0x5A5A5A5A, 4)
        return (time.perf_counter() - t) / n

    compare("Region.read(off, 4)   (pread)", "os.pread + from_bytes", ours_read, py_read,
            "<= 1.3")
    compare("Region.read(off, 4)   (pread)", FLOOR_METHOD, ours_read, floor_read)
    compare("Region.write(off, v, 4) (pwrite)", "os.pwrite + to_bytes", ours_write, py_write,
            "<= 1.3")
    compare("Region.write(off, v, 4) (pwrite)", FLOOR_METHOD, ours_write, floor_write)
    compare("Region.read(off, 4)   (pread)", "C pread", ours_read,
            lambda: c.per_op("pread", fd, off + reg, n))

    m = bar.mmap()
    mm = m.areas[0][1]
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    u32_py = memoryview(mm).cast("I")
    U32 = ctypes.c_uint32

    def ours_mread():
        rd, t = m.read, time.perf_counter()
        for _ in range(n):
            rd(reg, 4)
        return (time.perf_counter() - t) / n

    def ours_mwrite():
        wr, t = m.write, time.perf_counter()
        for _ in range(n):
            wr(reg, 0xA5A5A5A5, 4)
        return (time.perf_counter() - t) / n

    def ctypes_read():  # what a script without vfioctl does for a register at an offset
        at, t = U32.from_address, time.perf_counter()
        for _ in range(n):
            at(base + reg).value  # noqa: B018
        return (time.perf_counter() - t) / n

    def ctypes_write():
        at, t = U32.from_address, time.perf_counter()
        for _ in range(n):
            at(base + reg).value = 0xA5A5A5A5
        return (time.perf_counter() - t) / n

    def ours_view():
        u32, t = m.u32, time.perf_counter()
        for _ in range(n):
            u32[reg >> 2]  # noqa: B018
        return (time.perf_counter() - t) / n

    def py_view():
        t = time.perf_counter()
        for _ in range(n):
            u32_py[reg >> 2]  # noqa: B018
        return (time.perf_counter() - t) / n

    compare("MappedRegion.read(off, 4)", "ctypes load at base+off", ours_mread, ctypes_read,
            "<= 1.5")
    compare("MappedRegion.write(off, v, 4)", "ctypes store at base+off", ours_mwrite,
            ctypes_write, "<= 1.5")
    compare("MappedRegion.read(off, 4)", "memoryview element (floor)", ours_mread, py_view)
    compare("regs.u32[i]", "memoryview element", ours_view, py_view, "<= 1.1")
    compare("MappedRegion.read(off, 4)", "C load", ours_mread,
            lambda: c.per_op("load", fd, off, bar.size, n))

    size = m.areas[0][0].size
    dst = bytearray(size)
    nb = max(1, n // 100)

    def ours_bulk():
        t = time.perf_counter()
        for _ in range(nb):
            m.read_bytes(0, size)
        return (time.perf_counter() - t) / nb

    def ours_into():
        t = time.perf_counter()
        for _ in range(nb):
            m.readinto(dst, 0)
        return (time.perf_counter() - t) / nb

    def c_bulk():
        return c.per_op("bulk", fd, off, size, nb)

    compare(f"MappedRegion.read_bytes {size >> 10} KiB", "C memcpy", ours_bulk, c_bulk,
            "<= 1.05 (>= 0.95x C)")
    compare(f"MappedRegion.readinto {size >> 10} KiB", "C memcpy", ours_into, c_bulk,
            "<= 1.05 (>= 0.95x C)")
    m.close()


def dma_args(s) -> tuple[list, int]:
    """bench_ref's arguments naming this session's DMA space, and its fd."""
    if s.ioas is not None:
        return ["ioas", s.iommufd.fd, s.ioas.id], s.iommufd.fd
    return ["container", s.container.fd], s.container.fd


def prebuilt(s, addr: int, length: int) -> tuple:
    """(fd, map request, map struct, unmap request, unmap struct) for a bare ``fcntl.ioctl``
    of ``length`` bytes at ``addr`` to IOVA in this session's DMA space."""
    _where, fd = dma_args(s)
    if s.ioas is not None:
        mp = uapi.iommu_ioas_map(size=ctypes.sizeof(uapi.iommu_ioas_map), ioas_id=s.ioas.id,
                                 flags=uapi.IOMMU_IOAS_MAP_FIXED_IOVA
                                 | uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE,
                                 user_va=addr, length=length, iova=IOVA)
        un = uapi.iommu_ioas_unmap(size=ctypes.sizeof(uapi.iommu_ioas_unmap), ioas_id=s.ioas.id,
                                   iova=IOVA, length=length)
        return fd, uapi.IOMMU_IOAS_MAP, mp, uapi.IOMMU_IOAS_UNMAP, un
    mp = uapi.vfio_iommu_type1_dma_map(
        argsz=ctypes.sizeof(uapi.vfio_iommu_type1_dma_map), vaddr=addr, iova=IOVA, size=length,
        flags=uapi.VFIO_DMA_MAP_FLAG_READ | uapi.VFIO_DMA_MAP_FLAG_WRITE)
    un = uapi.vfio_iommu_type1_dma_unmap(
        argsz=ctypes.sizeof(uapi.vfio_iommu_type1_dma_unmap), iova=IOVA, size=length)
    return fd, uapi.VFIO_IOMMU_MAP_DMA, mp, uapi.VFIO_IOMMU_UNMAP_DMA, un


def map_rows(s, c: CRef) -> None:
    dma = s.dma
    mem = _mmap.mmap(-1, 4096, _mmap.MAP_SHARED | _mmap.MAP_ANONYMOUS)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    where, _fd = dma_args(s)
    fd, rm, mp, ru, un = prebuilt(s, addr, 4096)
    n = N

    def ours():
        map_, unmap, t = dma.map, dma.unmap, time.perf_counter()
        for _ in range(n):
            map_(mem, IOVA)
            unmap(IOVA)
        return (time.perf_counter() - t) / n

    def raw():
        return ioctl_ref(fd, rm, mp, ru, un, n)

    class Bare:  # the floor: two methods that do nothing but the reference's ioctls
        def map(self, buf, iova):
            fcntl.ioctl(fd, rm, mp)

        def unmap(self, iova):
            fcntl.ioctl(fd, ru, un)

    def floor():
        bare = Bare()
        map_, unmap, t = bare.map, bare.unmap, time.perf_counter()
        for _ in range(n):
            map_(mem, IOVA)
            unmap(IOVA)
        return (time.perf_counter() - t) / n

    compare("dma.map + dma.unmap 4 KiB", "fcntl.ioctl, prebuilt structs", ours, raw, "<= 1.3")
    compare("dma.map + dma.unmap 4 KiB", "two bare methods (floor)", ours, floor)
    compare("dma.map + dma.unmap 4 KiB", "C ioctl", ours, lambda: c.per_op("map", *where, n))

    with dma.prepare(mem, IOVA) as prep:  # the hot-loop form: checks and structs done once
        prep.unmap()

        def prepared():
            map_, unmap, t = prep.map, prep.unmap, time.perf_counter()
            for _ in range(n):
                map_()
                unmap()
            return (time.perf_counter() - t) / n

        what = "prepared map + unmap 4 KiB"
        compare(what, "fcntl.ioctl, prebuilt structs", prepared, raw, "<= 1.3")
        compare(what, "two bare methods (floor)", prepared, floor)
    mem.close()


def large_map_rows(s, c: CRef) -> None:
    where, _fd = dma_args(s)
    for kind, c_kind in ((None, "4k"), ("thp", "thp"), ("2M", "2M")):
        if kind == "2M":  # the pool: ours and bench_ref's buffer, only while they are used
            HUGEPAGES.write_text(str(2 * LARGE >> 21))
        try:
            buf = s.dma_alloc(LARGE, hugepages=kind)
        except vfioctl.VfioctlError as exc:
            say(f"large map {kind}: not measured ({exc})")
            ROWS.append({"operation": f"map {LARGE >> 20} MiB ({c_kind} pages)",
                         "error": str(exc)})
            continue
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf.mem))
        s.dma.unmap(buf.iova)
        times: dict[str, list[float]] = {"map": [], "unmap": []}
        raw_times: dict[str, list[float]] = {"map": [], "unmap": []}
        fd, rm, mp, ru, un = prebuilt(s, addr, len(buf.mem))

        def ours():
            ctypes.memset(addr, 0, len(buf.mem))  # hot, as bench_ref's memset leaves its own
            t = time.perf_counter()
            s.dma.map(buf.mem, IOVA)
            t1 = time.perf_counter()
            s.dma.unmap(IOVA)
            times["map"].append(t1 - t)
            times["unmap"].append(time.perf_counter() - t1)

        def raw():
            # the same after the same memset through a bare ioctl: what any Python code pays
            # right after the whole buffer was touched (the caches and TLB it evicted)
            ctypes.memset(addr, 0, len(buf.mem))
            t = time.perf_counter()
            fcntl.ioctl(fd, rm, mp)
            t1 = time.perf_counter()
            fcntl.ioctl(fd, ru, un)
            raw_times["map"].append(t1 - t)
            raw_times["unmap"].append(time.perf_counter() - t1)

        c_times: dict[str, list[float]] = {"map": [], "unmap": []}

        def c_run():
            r = c.run("bigmap", *where, len(buf.mem), c_kind, 1)
            c_times["map"].append(r["map_ns"] / 1e9)
            c_times["unmap"].append(r["unmap_ns"] / 1e9)

        for _ in range(ROUNDS):
            ours()
            c_run()
            raw()
        for op in ("map", "unmap"):
            for ref_name, ref_times, target in (("C ioctl", c_times, "<= 1.05"),
                                                ("fcntl.ioctl, prebuilt structs", raw_times, "")):
                ratios = [o / r for o, r in zip(times[op], ref_times[op])]
                row = {"operation": f"{op} {LARGE >> 20} MiB ({c_kind} pages)",
                       "reference": ref_name, "vfioctl_us": statistics.median(times[op]) * 1e6,
                       "reference_us": statistics.median(ref_times[op]) * 1e6,
                       "ratio": statistics.median(ratios), "target": target}
                ROWS.append(row)
                say(f"{row['operation']:38s} {ref_name:26s} {row['vfioctl_us']:10.0f} "
                    f"{row['reference_us']:10.0f} {row['ratio']:6.2f}x  {target}")
        s.dma.map(buf.mem, buf.iova)  # as dma_alloc left it, for dma_free at close
        s.dma_free(buf)
    HUGEPAGES.write_text(HUGEPAGES_WERE)


def open_row(bdf: str, mode: str, exe: Path) -> None:
    pci = PciDevice(bdf)
    n = max(1, N // 100)

    def ours():
        t = time.perf_counter()
        for _ in range(n):
            vfioctl.open(bdf, iommu_mode=mode).close()
        return (time.perf_counter() - t) / n

    c = CRef(exe, [])
    iommu_type = IOMMU_TYPES["type1v2" if mode.endswith("v2") or mode.endswith("v2_iommu")
                             else "type1"]
    if mode == "iommufd":
        args = ["open", "cdev", str(pci.cdev_path), n]
    else:
        args = ["open", "group", f"/dev/vfio/{pci.iommu_group}", bdf, iommu_type, n]
    bare = bare_open(bdf, mode, iommu_type)

    def floor():
        t = time.perf_counter()
        for _ in range(n):
            bare()
        return (time.perf_counter() - t) / n

    compare(f"open + close session ({mode})", "C, same ioctls", ours,
            lambda: c.per_op(*args), "<= 1.2")
    compare(f"open + close session ({mode})", "bare Python (floor)", ours, floor)


def bare_open(bdf: str, mode: str, iommu_type: int):
    """The floor of a session open in Python: C's syscalls (bench_ref.c's open_cdev and
    open_group), after the sysfs reads that find the node from a PCI address (the driver link,
    then the vfio-dev/ listing or the iommu_group link); no checks, no objects."""
    sysdev = f"/sys/bus/pci/devices/{bdf}"
    o, c, ioctl, rw = os.open, os.close, fcntl.ioctl, os.O_RDWR | os.O_CLOEXEC
    readlink, listdir = os.readlink, os.listdir
    if mode == "iommufd":
        bind = uapi.vfio_device_bind_iommufd(argsz=ctypes.sizeof(uapi.vfio_device_bind_iommufd))
        alloc = uapi.iommu_ioas_alloc(size=ctypes.sizeof(uapi.iommu_ioas_alloc))
        attach = uapi.vfio_device_attach_iommufd_pt(
            argsz=ctypes.sizeof(uapi.vfio_device_attach_iommufd_pt))

        def cdev():
            readlink(sysdev + "/driver")
            name = listdir(sysdev + "/vfio-dev")[0]
            d = o("/dev/vfio/devices/" + name, rw)
            i = o("/dev/iommu", rw)
            bind.iommufd = i
            ioctl(d, uapi.VFIO_DEVICE_BIND_IOMMUFD, bind, True)
            ioctl(i, uapi.IOMMU_IOAS_ALLOC, alloc, True)
            attach.pt_id = alloc.out_ioas_id
            ioctl(d, uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach, True)
            c(d)
            c(i)
        return cdev
    name = ctypes.create_string_buffer(bdf.encode())

    def group():
        readlink(sysdev + "/driver")
        g = readlink(sysdev + "/iommu_group").rpartition("/")[2]
        k = o("/dev/vfio/vfio", rw)
        gr = o("/dev/vfio/" + g, rw)
        ioctl(gr, uapi.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(k), True)
        ioctl(k, uapi.VFIO_SET_IOMMU, iommu_type)
        c(ioctl(gr, uapi.VFIO_GROUP_GET_DEVICE_FD, name, True))
        c(gr)
        c(k)
    return group


def startup_row() -> None:
    n = max(1, N // 1000)

    def run(cmd):
        def timed():
            t = time.perf_counter()
            for _ in range(n):
                subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
            return (time.perf_counter() - t) / n
        return timed

    compare("vfioctl --help", "python -c 'import click'",
            run([sys.executable, "-m", "vfioctl", "--help"]),
            run([sys.executable, "-c", "import click"]), "<= 1.5")


@contextmanager
def ivshmem_on_vfio_pci():
    """ivshmem's PCI address, bound to vfio-pci for the block; after it, the device goes back
    to the driver it had and the hugepage pool to its size."""
    bdf = discovery.list_devices(IVSHMEM)[0].bdf
    dev = PciDevice(bdf)
    was = dev.driver
    binding.ensure_vfio_driver(dev)  # a kernel with vfio-pci as a module (Debian's)
    binding.move_to(dev, "vfio-pci")
    try:
        yield bdf
    finally:
        HUGEPAGES.write_text(HUGEPAGES_WERE)
        binding.return_to(dev, was)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="vfioctl-bench-") as work:
        exe = build_c(Path(work))
        with ivshmem_on_vfio_pci() as bdf:
            with vfioctl.open(bdf) as s:
                mode = s.iommu_mode
                say(f"ivshmem {bdf}, mode {mode}, {os.uname().release}: N={N}, {ROUNDS} rounds "
                    "(medians; ratio = vfioctl / reference)")
                say(f"{'operation':38s} {'reference':26s} {'vfioctl us':>10s} {'ref us':>10s} "
                    f"{'ratio':>7s}  target")
                c = CRef(exe, [s.device.fd] + ([s.iommufd.fd] if s.iommufd else [])
                         + ([s.container.fd] if s.container else []))
                for group, rows in (("registers", register_rows), ("maps", map_rows),
                                    ("large", large_map_rows)):
                    if group in ONLY:
                        rows(s, c)
            if "open" in ONLY:
                open_row(bdf, mode, exe)
            if "startup" in ONLY:
                startup_row()
    if AS_JSON:
        print(json.dumps({"device": bdf, "iommu_mode": mode, "kernel": os.uname().release,
                          "n": N, "rounds": ROUNDS, "rows": ROWS}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
