"""Pure logic: argument parsing, bounds checks, IOVA allocation, hexdump, plan/refusals on a
fake sysfs tree, and the ioctl seam's errors (the kernel faked at the seam)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from vfioctl import ioctl as seam
from vfioctl import uapi
from vfioctl.cli import hexdump
from vfioctl.device import RegionInfo, check_access, region_index
from vfioctl.errors import KernelError, RegionAccessError, UsageError
from vfioctl.iommufd import IOAS, IovaRange, Mapping
from vfioctl.pci import PciDevice, parse_bdf


@pytest.mark.parametrize("text,bdf", [("0000:01:00.0", "0000:01:00.0"), ("01:00.0", "0000:01:00.0"),
                                      ("1:2.3", "0000:01:02.3"), ("ABCD:ff:1f.7", "abcd:ff:1f.7")])
def test_parse_bdf(text, bdf):
    assert parse_bdf(text) == bdf


@pytest.mark.parametrize("text", ["", "01:00", "01:00.8", "0000:01:20.0", "zz:00.0", "1:2:3:4.0"])
def test_parse_bdf_rejects(text):
    with pytest.raises(UsageError) as exc:
        parse_bdf(text)
    assert exc.value.hint


def test_region_index():
    assert region_index("bar0") == 0 and region_index("CONFIG") == 7 and region_index("vga") == 8
    assert region_index("9") == 9 and region_index("0x3") == 3
    with pytest.raises(UsageError):
        region_index("bar6")


def test_check_access():
    info = RegionInfo(0, 7, 0x100, 0)
    check_access(info, 0xFC, 4, 4)
    with pytest.raises(RegionAccessError, match="past the end"):
        check_access(info, 0xFD, 4, 4)
    with pytest.raises(RegionAccessError, match="not aligned"):
        check_access(info, 2, 4, 4)
    with pytest.raises(RegionAccessError, match="width 3"):
        check_access(info, 0, 3, 3)


def test_hexdump():
    lines = hexdump(bytes(range(0x30, 0x48)), 0x10)
    assert lines[0] == "00000010  30 31 32 33 34 35 36 37  38 39 3a 3b 3c 3d 3e 3f  |0123456789:;<=>?|"
    assert lines[1].startswith("00000020  40 41 42 43 44 45 46 47")


class _FakeIommufd:
    closed = False
    path = "/dev/iommu"


def test_allocate_iova_skips_taken_and_honours_limit(monkeypatch):
    ioas = IOAS(_FakeIommufd(), 2)
    monkeypatch.setattr(ioas, "iova_ranges", lambda: ([IovaRange(0, (1 << 48) - 1)], 4096))
    assert ioas.allocate_iova(0x2000) == 0x1000  # never IOVA 0
    ioas._maps[0x1000] = (Mapping(0x1000, 0x3000, True, True), None)
    assert ioas.allocate_iova(0x1000) == 0x4000
    with pytest.raises(UsageError, match="no free IOVA"):
        ioas.allocate_iova(0x10000, limit=0x8000)


def test_an_iova_or_length_past_64_bits_is_refused_before_any_ioctl(monkeypatch):
    """A struct's u64 field takes an int modulo 2**64 (ctypes does not check): IOVA 2**64 + X
    would map or unmap at X. Refused, by the compiled paths (which hand such a call to Python's)
    and the pure-Python ones alike, before anything reaches the seam."""
    import mmap

    def kernel(*args):
        raise AssertionError(f"an ioctl was issued: {args}")

    monkeypatch.setattr(seam, "_sys_ioctl", kernel)
    ioas = IOAS(_FakeIommufd(), 2)
    mem = mmap.mmap(-1, 0x2000)
    for map_ in (ioas.map, ioas._py_map):
        for iova in (1 << 64, (1 << 64) + 0x1000, 1 << 70):
            with pytest.raises(UsageError, match="outside the 64-bit IO address space") as exc:
                map_(mem, iova)
            assert "iova_ranges()" in exc.value.hint
    for unmap in (ioas.unmap, ioas._py_unmap):
        for iova, length, what in ((1 << 64, 0x1000, "outside the 64-bit"),
                                   (-0x1000, 0x1000, "outside the 64-bit"),
                                   (0x1000, 0, "cannot unmap 0x0 bytes"),
                                   (0x1000, -0x1000, "cannot unmap -0x1000 bytes"),
                                   (0x1000, 1 << 64, "cannot unmap 0x10000000000000000 bytes")):
            with pytest.raises(UsageError, match=what):
                unmap(iova, length)
    assert ioas.mappings == []
    mem.close()  # no export was left behind



def test_map_errors_name_the_taken_range_and_device_memory():
    from vfioctl.iova import explain_map_error

    def hint(err, pins):
        exc = KernelError("IOMMU_IOAS_MAP", err, "/dev/iommu")
        explain_map_error(exc, 0x600000, 0x2000, pins)
        return exc.hint

    assert hint(errno.EEXIST, False) == hint(errno.EEXIST, True) == (
        "something is mapped in IOVA 0x600000-0x601fff already: unmap it first, or map at "
        "another IOVA")
    assert "device memory" in hint(errno.EFAULT, True)  # iommufd: a BAR's mmap does not pin
    assert "vfio_type1v2_iommu" in hint(errno.EFAULT, True)
    exc = KernelError("IOMMU_IOAS_MAP", errno.EOVERFLOW, "/dev/iommu")
    explain_map_error(exc, (1 << 64) - 0x1000, 0x2000, True)  # past 2**64, whatever the errno
    assert exc.hint.startswith("IOVA 0xfffffffffffff000 + 0x2000 bytes runs past the end")
    for err, pins in ((errno.EFAULT, False), (errno.ENOMEM, True)):  # the seam's own hint
        assert hint(err, pins) == KernelError("IOMMU_IOAS_MAP", err, "/dev/iommu").hint
    from vfioctl.container import Container
    assert IOAS.pins_pages and not Container.pins_pages  # a backend sets a compat container's


def test_a_prepared_mapping_sends_the_same_structs_each_time(monkeypatch):
    """PreparedMapping's structs, built once: the map is the buffer's address, FIXED_IOVA and
    the rights; the unmap asks for the whole range again after the kernel wrote back less (the
    range held someone else's smaller mapping), and returns what the kernel wrote. The
    pure-Python methods, which send through the seam; the compiled ones issue the same ioctls
    themselves, and the VM proves them (tests/vm/test_speedups.py)."""
    import ctypes
    import mmap

    sent = []

    def fake(fd, req, arg, mutate=False):
        sent.append((req, bytes(arg)))
        if req == uapi.IOMMU_IOAS_UNMAP and len(sent) == 2:
            arg.length = 0x1000  # what the kernel unmapped

    fd = _FakeIommufd()
    fd._fd, fd.path = 7, "/dev/iommu"
    ioas = IOAS(fd, 2)
    monkeypatch.setattr(seam, "_sys_ioctl", fake)
    mem = mmap.mmap(-1, 0x2000)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    p = ioas.prepare(mem, 0x10000, writable=False)
    assert p.mapped and (p.iova, p.length) == (0x10000, 0x2000)
    assert p._py_unmap() == 0x1000 and not p.mapped
    assert p._py_map() is p.mapping and p._py_unmap() == 0x2000
    p.close()
    assert p.closed and ioas._prepared == []
    mem.close()  # the export went with it
    reqs = [r for r, _ in sent]
    assert reqs == [uapi.IOMMU_IOAS_MAP, uapi.IOMMU_IOAS_UNMAP, uapi.IOMMU_IOAS_MAP,
                    uapi.IOMMU_IOAS_UNMAP]
    for raw in (sent[0][1], sent[2][1]):
        m = uapi.iommu_ioas_map.from_buffer_copy(raw)
        assert (m.size, m.ioas_id, m.user_va, m.length, m.iova) == (40, 2, addr, 0x2000, 0x10000)
        assert m.flags == uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_READABLE
    for raw in (sent[1][1], sent[3][1]):
        u = uapi.iommu_ioas_unmap.from_buffer_copy(raw)
        assert (u.size, u.ioas_id, u.iova, u.length) == (24, 2, 0x10000, 0x2000)
    for unmap in (p.unmap, p._py_unmap):
        with pytest.raises(UsageError, match="IOVA 0x10000 is closed"):
            unmap()

def test_seam_fills_argsz_and_names_the_failure(monkeypatch):
    seen = {}

    def fake(fd, req, arg, mutate=False):
        seen["argsz"] = arg.argsz
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(seam, "_sys_ioctl", fake)
    arg = uapi.vfio_device_info()
    with pytest.raises(KernelError) as exc:
        seam.ioctl(3, uapi.VFIO_DEVICE_GET_INFO, arg, op="VFIO_DEVICE_GET_INFO", path="/dev/x")
    assert seen["argsz"] == 24
    assert exc.value.errno == errno.EINVAL and exc.value.op == "VFIO_DEVICE_GET_INFO"
    assert str(exc.value) == "VFIO_DEVICE_GET_INFO on /dev/x failed: EINVAL (Invalid argument)"


def test_seam_on_a_closed_owners_fd_says_closed():
    """An fd owner keeps -1 once closed and passes it to the seam as it is: the host kernel's
    EBADF on -1 comes out as the owner's "closed" error (op ``use``, the path), not as a failed
    ioctl; the errno-returning form returns -EBADF; a real fd's EBADF stays a KernelError."""
    from vfioctl.errors import EnvironmentProblem
    arg = uapi.vfio_device_info()
    for call in (lambda: seam.ioctl(-1, uapi.VFIO_DEVICE_GET_INFO, arg, op="X", path="/dev/x"),
                 lambda: seam.ioctl_filled(-1, uapi.VFIO_DEVICE_GET_INFO, arg, "X", "/dev/x"),
                 lambda: seam.ioctl(-1, uapi.VFIO_SET_IOMMU, 3, op="X", path="/dev/x")):
        with pytest.raises(EnvironmentProblem) as exc:
            call()
        assert str(exc.value) == "/dev/x is closed"
        assert (exc.value.op, exc.value.path, exc.value.errno) == ("use", "/dev/x", None)
        assert exc.value.hint == "open it again"
    assert seam.try_ioctl(-1, uapi.VFIO_DEVICE_GET_INFO, arg) == -errno.EBADF
    r, w = os.pipe()
    os.close(r)
    os.close(w)  # a number that is no open fd: the kernel's EBADF, named as such
    with pytest.raises(KernelError, match="EBADF"):
        seam.ioctl(r, uapi.VFIO_DEVICE_GET_INFO, arg, op="X", path="/dev/x")


def test_buffer_address_rejects_readonly_and_misaligned():
    from vfioctl.iommufd import buffer_address
    with pytest.raises(UsageError, match="read-only"):
        buffer_address(b"abc")
    addr, length, keep = buffer_address(bytearray(10))
    assert length == 10 and addr


# --- binding plan on a fake sysfs ------------------------------------------------------------
def _fake_pci(root, bdf, cls, driver=None, group=1):
    d = root / "bus/pci/devices" / bdf
    d.mkdir(parents=True)
    (d / "class").write_text(f"0x{cls:06x}\n")
    (d / "vendor").write_text("0x8086\n")
    (d / "device").write_text("0x1234\n")
    cfg = bytearray(64)
    cfg[0x0E] = 1 if cls >> 8 == 0x0604 else 0  # header type: PCI-to-PCI bridge, or normal
    (d / "config").write_bytes(bytes(cfg))
    g = root / "kernel/iommu_groups" / str(group) / "devices"
    g.mkdir(parents=True, exist_ok=True)
    (g / bdf).symlink_to(d)
    (d / "iommu_group").symlink_to(root / "kernel/iommu_groups" / str(group))
    if driver:
        drv = root / "bus/pci/drivers" / driver
        drv.mkdir(parents=True, exist_ok=True)
        (d / "driver").symlink_to(drv)
    return PciDevice(bdf, root)


def test_plan_refuses_group_members_on_host_drivers(tmp_path):
    from vfioctl.binding import plan
    from vfioctl.errors import Refused
    a = _fake_pci(tmp_path, "0000:00:1f.2", 0x010601)
    _fake_pci(tmp_path, "0000:00:1f.3", 0x0C0500, driver="i801_smbus")
    _fake_pci(tmp_path, "0000:00:1f.0", 0x060100)
    with pytest.raises(Refused) as exc:
        plan([a], group=False, force=True)
    assert "0000:00:1f.3 (i801_smbus)" in str(exc.value) and exc.value.fix == "group"
    assert "--" not in exc.value.hint  # the library names no CLI flags; the CLI does:
    from vfioctl.cli import FIX_HINTS
    assert "--group" in FIX_HINTS[exc.value.fix]
    got = plan([a], group=True, force=False)
    assert sorted(d.bdf for d in got) == ["0000:00:1f.2", "0000:00:1f.3"]


def test_plan_refuses_a_display_the_host_uses_naming_what_uses_it(tmp_path):
    """A GPU: the boot display, a framebuffer (the console), an open DRM node (its process is
    named: here this one). Forcing binds it: the reasons said what it costs."""
    from vfioctl.binding import in_use_reasons, plan
    from vfioctl.errors import Refused
    from vfioctl.pci import PciDevice
    gpu = _fake_pci(tmp_path / "sys", "0000:00:02.0", 0x030000, driver="i915")
    (gpu.path / "boot_vga").write_text("1\n")
    (gpu.path / "graphics/fb0").mkdir(parents=True)
    (gpu.path / "drm/card0").mkdir(parents=True)
    gpu = PciDevice(gpu.bdf, tmp_path / "sys", tmp_path / "dev")
    (tmp_path / "dev/dri").mkdir(parents=True)
    (tmp_path / "dev/dri/card0").write_text("")
    with open(tmp_path / "dev/dri/card0") as client:  # noqa: F841 (held open: a DRM client)
        reasons = " | ".join(in_use_reasons(gpu))
        with pytest.raises(Refused) as exc:
            plan([gpu], group=False, force=False)
    assert "boot display" in reasons and "framebuffer fb0" in reasons
    assert "DRM nodes (card0) are open by " in reasons and f"(pid {os.getpid()})" in reasons
    assert exc.value.fix == "force" and "boot display" in str(exc.value)
    assert [d.bdf for d in plan([gpu], group=False, force=True)] == [gpu.bdf]


def test_plan_refuses_a_usb_controller_with_devices_naming_them(tmp_path):
    from vfioctl.binding import plan
    from vfioctl.errors import Refused
    xhci = _fake_pci(tmp_path, "0000:00:14.0", 0x0C0330, driver="xhci_hcd")
    kbd = xhci.path / "usb1/1-1"
    (kbd / "1-1:1.0").mkdir(parents=True)  # an interface, not a device
    (kbd / "product").write_text("QEMU USB Keyboard\n")
    (kbd / "1-1.2").mkdir()
    (kbd / "1-1.2/product").write_text("Flash Disk\n")
    (xhci.path / "usb2").mkdir()  # an empty root hub
    with pytest.raises(Refused) as exc:
        plan([xhci], group=False, force=False)
    assert ("USB host controller with devices attached: 1-1 (QEMU USB Keyboard), "
            "1-1.2 (Flash Disk)") in str(exc.value)
    (kbd / "1-1.2/product").unlink()
    for d in ((kbd / "1-1.2"), (kbd / "1-1:1.0"), kbd):
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    assert [d.bdf for d in plan([xhci], group=False, force=False)] == [xhci.bdf]


def test_vfio_device_users_are_the_processes_that_hold_the_device(tmp_path):
    """Who holds a device: its cdev open; a device fd whose fdinfo names it (Linux 6.18+);
    on older kernels a device fd next to the device's group. Not: a group fd alone, a device
    fd that fdinfo says is another device's."""
    from vfioctl.pci import vfio_device_users
    dev = _fake_pci(tmp_path / "sys", "0000:00:05.0", 0x020000, driver="vfio-pci", group=7)
    (dev.path / "vfio-dev/vfio3").mkdir(parents=True)
    from vfioctl.pci import PciDevice
    dev = PciDevice(dev.bdf, tmp_path / "sys", tmp_path / "dev")
    (tmp_path / "dev/vfio/devices").mkdir(parents=True)
    (tmp_path / "dev/vfio/devices/vfio3").write_text("")
    proc = tmp_path / "proc"
    group = f"{tmp_path}/dev/vfio/7"
    other = "/sys/devices/pci0000:00/0000:00:06.0"
    procs = {  # pid: (comm, [(fd link, fdinfo syspath or None)])
        "10": ("cdevuser", [(f"{tmp_path}/dev/vfio/devices/vfio3", None)]),
        "11": ("newkernel", [("anon_inode:[vfio-device]", "/sys/devices/pci0000:00/0000:00:05.0")]),
        "12": ("oldkernel", [(group, None), ("anon_inode:[vfio-device]", None)]),
        "13": ("grouponly", [(group, None)]),
        "14": ("otherdev", [(group, None), ("anon_inode:[vfio-device]", other)]),
    }
    for pid, (comm, fds) in procs.items():
        (proc / pid / "fd").mkdir(parents=True)
        (proc / pid / "fdinfo").mkdir()
        (proc / pid / "comm").write_text(comm + "\n")
        for n, (link, syspath) in enumerate(fds):
            os.symlink(link, proc / pid / "fd" / str(n))
            (proc / pid / "fdinfo" / str(n)).write_text(
                "pos:\t0\n" + (f"vfio-device-syspath: {syspath}\n" if syspath else ""))
    assert sorted(vfio_device_users(dev, proc)) == [
        "cdevuser (pid 10)", "newkernel (pid 11)", "oldkernel (pid 12)"]


def test_routes_and_addresses_are_read_per_interface(tmp_path):
    from vfioctl.pci import _ipv6_addresses, _routes
    (tmp_path / "net").mkdir()
    (tmp_path / "net/route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t0009090A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    (tmp_path / "net/ipv6_route").write_text(
        "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth1\n"
        "20010db8000000000000000000000000 40 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth1\n")
    (tmp_path / "net/if_inet6").write_text(
        "fe800000000000000000000000000001 02 40 20 80 eth1\n"
        "20010db8000000000000000000000001 02 40 00 80 eth1\n")
    assert _routes(tmp_path) == {"eth0": ["default", "10.9.9.0/24"], "eth1": ["2001:db8::/64"]}
    assert _ipv6_addresses(tmp_path, "eth1") == ["2001:db8::1/64"]


def test_plan_refuses_bridges_and_allows_pcieport(tmp_path):
    from vfioctl.binding import plan
    from vfioctl.errors import Refused
    br = _fake_pci(tmp_path, "0000:00:1c.0", 0x060400, driver="pcieport", group=2)
    ep = _fake_pci(tmp_path, "0000:01:00.0", 0x020000, driver="e1000e", group=2)
    with pytest.raises(Refused, match=r"PCI bridge \(header type 1\)"):
        plan([br], group=False, force=True)  # never: vfio-pci does not take it
    assert [d.bdf for d in plan([ep], group=False, force=False)] == [ep.bdf]


def test_plan_a_bridge_class_function_in_the_group_needs_force(tmp_path):
    """An LPC bridge (class 0x0601, normal header) on a host driver blocks its group: --group
    takes it only when forced, and says why; it is never silently left behind."""
    from vfioctl.binding import plan
    from vfioctl.errors import Refused
    sata = _fake_pci(tmp_path, "0000:00:1f.2", 0x010601, group=3)
    _fake_pci(tmp_path, "0000:00:1f.0", 0x060100, driver="lpc_ich", group=3)
    with pytest.raises(Refused) as exc:
        plan([sata], group=True, force=False)
    assert "0000:00:1f.0 is in use: it is a bridge-class function" in str(exc.value)
    assert "lpc_ich" in str(exc.value) and exc.value.fix == "force"
    assert sorted(d.bdf for d in plan([sata], group=True, force=True)) == [
        "0000:00:1f.0", "0000:00:1f.2"]


def test_state_file_is_written_atomically(tmp_path):
    from vfioctl.binding import State
    st = State(tmp_path)
    with st.locked():
        st.save({"0000:01:00.0": {"original_driver": "nvme"}})
    assert st.load() == {"0000:01:00.0": {"original_driver": "nvme"}}
    assert sorted(os.listdir(tmp_path)) == ["lock", "state.json"]
    st.save({"0000:01:00.0": {"original_driver": "nvme"}, "0000:02:00.0": {"original_driver": None}})
    assert sorted(os.listdir(tmp_path)) == ["lock", "state.json", "state.json.prev"]
    assert st.parse(st.prev.read_text()) == {"0000:01:00.0": {"original_driver": "nvme"}}


@pytest.mark.parametrize("crash_in", ["json.dump", "os.fsync", "os.replace"])
def test_a_save_that_dies_part_way_leaves_the_old_state(tmp_path, monkeypatch, crash_in):
    """Killed at any point of a save, the state file is the old one, whole (a save that wrote
    into state.json itself would leave it empty or half-written here)."""
    import json as _json

    from vfioctl import binding
    st = binding.State(tmp_path)
    old = {"0000:01:00.0": {"original_driver": "nvme"}}
    st.save(old)
    new = {f"0000:{i:02x}:00.0": {"original_driver": "e1000e"} for i in range(1, 200)}

    def half_dump(obj, f, **kw):
        f.write(_json.dumps(obj, **kw)[:100])
        raise KeyboardInterrupt("killed")

    def die(*a, **kw):
        raise KeyboardInterrupt("killed")

    target = {"json.dump": (binding.json, "dump", half_dump),
              "os.fsync": (binding.os, "fsync", die),
              "os.replace": (binding.os, "replace", die)}[crash_in]
    monkeypatch.setattr(*target)
    with pytest.raises(KeyboardInterrupt):
        st.save(new)
    monkeypatch.undo()
    assert st.load() == old


@pytest.mark.parametrize("text,why", [
    ("", "it is empty"),
    ("   \n", "it is empty"),
    ('{"0000:01:00.0": {"original_driver": "nv', "corrupt"),  # truncated
    ("[1, 2, 3]", "JSON list"),
    ('{"hello": "world"}', "not a vfioctl record"),
    ('{"0000:01:00.0": {"driver": "nvme"}}', "not a vfioctl record"),
    ('{"0000:01:00.0": {"original_driver": "../../x"}}', "no valid driver"),
    ('{"0000:01:00.0": {"original_driver": 7}}', "no valid driver"),
    ("\x00\x01binary", "corrupt"),
])
def test_a_bad_state_file_is_one_clear_error_and_is_kept(tmp_path, text, why):
    from vfioctl.binding import State
    from vfioctl.errors import EnvironmentProblem
    st = State(tmp_path)
    st.path.write_text(text)
    with pytest.raises(EnvironmentProblem) as exc:
        st.load()
    assert str(st.path) in str(exc.value) and "corrupt" in str(exc.value)
    assert why in str(exc.value)
    assert "remove it" in exc.value.hint
    assert st.path.read_text() == text  # nothing overwritten


def test_a_bad_state_file_points_at_the_previous_good_copy(tmp_path):
    from vfioctl.binding import State
    from vfioctl.errors import EnvironmentProblem
    st = State(tmp_path)
    st.save({"0000:01:00.0": {"original_driver": "nvme"}})
    st.save({"0000:01:00.0": {"original_driver": "nvme"}, "0000:02:00.0": {"original_driver": None}})
    st.path.write_text("{ broken")
    with pytest.raises(EnvironmentProblem) as exc:
        st.load()
    assert str(st.prev) in exc.value.hint


def test_the_state_loader_ends_in_records_or_a_vfioctl_error_fuzzed(tmp_path):
    """Any text at all: a correct parse or a VfioctlError, never another exception."""
    from hypothesis import given, settings, strategies as st_

    from vfioctl.binding import State
    from vfioctl.errors import VfioctlError
    state = State(tmp_path)
    json_ish = st_.recursive(
        st_.none() | st_.booleans() | st_.integers() | st_.text(max_size=12),
        lambda kids: st_.lists(kids, max_size=4) | st_.dictionaries(
            st_.sampled_from(["0000:01:00.0", "01:00.0", "x", "original_driver", ""]) |
            st_.text(max_size=8), kids, max_size=4), max_leaves=12)

    @settings(max_examples=300, deadline=None)
    @given(st_.one_of(st_.text(max_size=200), json_ish.map(__import__("json").dumps)))
    def check(text):
        state.path.write_text(text)
        try:
            data = state.load()
        except VfioctlError:
            return
        assert isinstance(data, dict)
        assert all(isinstance(r, dict) and "original_driver" in r for r in data.values())

    check()


# --- require_cdev's environment errors on a fake sysfs ----------------------------------------
def test_require_cdev_errors_name_the_fix(tmp_path, monkeypatch):
    from vfioctl import kernel
    from vfioctl.errors import EnvironmentProblem, NotBoundToVfio
    from vfioctl.pci import require_cdev
    full = kernel.KernelCaps(iommufd=True, cdev=True, group=True, container="legacy",
                             iommu_units=("dmar0",), vfio_pci=True)
    monkeypatch.setattr(kernel, "kernel_caps", lambda *a, **k: full)
    dev = _fake_pci(tmp_path / "sys", "0000:01:00.0", 0x020000, driver="e1000e")
    with pytest.raises(NotBoundToVfio) as exc:
        require_cdev(dev)
    assert "bound to e1000e" in str(exc.value) and "vfioctl bind 0000:01:00.0" in exc.value.hint
    vfio = _fake_pci(tmp_path / "sys", "0000:02:00.0", 0x020000, driver="vfio-pci", group=2)
    vfio = PciDevice(vfio.bdf, tmp_path / "sys", tmp_path / "dev")
    with pytest.raises(EnvironmentProblem) as exc:
        require_cdev(vfio)
    assert "no device cdev" in str(exc.value) and "CONFIG_VFIO_DEVICE_CDEV" in exc.value.hint
    (vfio.path / "vfio-dev/vfio3").mkdir(parents=True)
    (vfio.path / "vfio-dev/vfio3/dev").write_text("511:3\n")
    with pytest.raises(EnvironmentProblem) as exc:
        require_cdev(vfio)
    assert "vfio3" in str(exc.value) and "mknod" in exc.value.hint
    (tmp_path / "dev/vfio/devices").mkdir(parents=True)
    (tmp_path / "dev/vfio/devices/vfio3").write_text("")
    assert require_cdev(vfio) == tmp_path / "dev/vfio/devices/vfio3"


def test_resolve_bound_gives_the_device_or_the_error_of_each_step(tmp_path):
    """A session's DEVICE: on vfio-pci it is settled by the driver link alone; otherwise the
    same errors as resolve + require_vfio_pci (no such address, no such device, not bound)."""
    from vfioctl.errors import DeviceNotFound, NotBoundToVfio
    from vfioctl.pci import resolve_bound
    root = tmp_path / "sys"
    _fake_pci(root, "0000:01:00.0", 0x020000, driver="vfio-pci")
    _fake_pci(root, "0000:02:00.0", 0x020000, driver="e1000e", group=2)
    _fake_pci(root, "0000:03:00.0", 0x020000, group=3)
    dev = resolve_bound("1:0.0", root)
    assert dev == PciDevice("0000:01:00.0", root) and dev.driver == "vfio-pci"
    with pytest.raises(NotBoundToVfio,
                       match=r"0000:02:00.0 is not bound to vfio-pci \(bound to e1000e\)"):
        resolve_bound("02:00.0", root)
    with pytest.raises(NotBoundToVfio, match=r"\(bound to no driver\)"):
        resolve_bound("03:00.0", root)
    with pytest.raises(DeviceNotFound, match="no PCI device 0000:04:00.0"):
        resolve_bound("04:00.0", root)
    with pytest.raises(UsageError, match="is not a PCI address"):
        resolve_bound("04:00", root)


def test_require_cdev_names_the_missing_kernel_feature(tmp_path, monkeypatch):
    from vfioctl import kernel
    from vfioctl.errors import EnvironmentProblem
    from vfioctl.pci import require_cdev
    debian = kernel.KernelCaps(iommufd=False, cdev=False, group=True, container="legacy",
                               iommu_units=("dmar0",), vfio_pci=True)
    monkeypatch.setattr(kernel, "kernel_caps", lambda *a, **k: debian)
    vfio = _fake_pci(tmp_path / "sys", "0000:02:00.0", 0x020000, driver="vfio-pci", group=2)
    vfio = PciDevice(vfio.bdf, tmp_path / "sys", tmp_path / "dev")
    with pytest.raises(EnvironmentProblem) as exc:
        require_cdev(vfio)
    assert "CONFIG_IOMMUFD (no /dev/iommu) and CONFIG_VFIO_DEVICE_CDEV" in str(exc.value)
    assert "legacy VFIO group and type1 container" in exc.value.hint


def test_region_value_must_fit_the_width():
    from vfioctl.device import Region

    class Dev:
        path = "/dev/vfio/devices/vfio0"
        _fd = -1

    reg = Region(Dev(), RegionInfo(0, 7, 0x100, 0))
    with pytest.raises(RegionAccessError, match="does not fit in 2 bytes"):
        reg.write(0, 0x10000, 2)
    ro = Region(Dev(), RegionInfo(0, 1, 0x100, 0))  # READ only
    with pytest.raises(RegionAccessError, match="is not writable"):
        ro.write(0, 1, 4)


def test_library_hints_name_no_cli_flags():
    """Every hint string in the library's source, and every fix of its findings (doctor), is
    free of CLI flags (the CLI and the pytest plugin, the front ends, map fix codes to their
    own words)."""
    import re
    from pathlib import Path

    import vfioctl
    root = Path(vfioctl.__file__).parent
    offenders = []
    for f in root.rglob("*.py"):
        if f.name in ("cli.py", "pytest_plugin.py"):  # the front ends: their own flags
            continue
        for n, line in enumerate(f.read_text().splitlines(), 1):
            # a hint, a fix, or a string that opens with a command (doctor's fixes did)
            if ("hint" in line or "fix" in line or re.search(r"f?\"`vfioctl ", line)) and re.search(
                    r"(?<![\w-])--[a-z]", line):
                offenders.append(f"{f.name}:{n}: {line.strip()}")
    assert not offenders, offenders


@pytest.mark.parametrize("bad", [0x100000000, -1, "0x100000000", "-1"])
def test_region_and_irq_indexes_are_range_checked_before_ctypes(bad):
    """ctypes would truncate 0x100000000 into a __u32 0 (bar0): refused instead."""
    from vfioctl.device import region_index
    from vfioctl.errors import UsageError
    from vfioctl.irq import irq_index
    with pytest.raises(UsageError, match="out of range"):
        region_index(bad)
    if isinstance(bad, int):
        with pytest.raises(UsageError, match="out of range"):
            irq_index(bad)


def test_a_register_sweep_costs_no_memory_and_every_access_is_checked(tmp_path):
    """A 4-byte sweep of a 1 MiB region through Region.read (preads of a file standing in for
    the device fd) and MappedRegion.read (an mmap of it) allocates nothing that stays:
    tracemalloc's peak growth stays under 64 KiB; accesses past the end, misaligned or of a bad
    width are still refused."""
    import tracemalloc

    from vfioctl.device import MappedRegion, Region
    from vfioctl.errors import RegionAccessError

    size = 1 << 20
    path = tmp_path / "bar"
    path.write_bytes(bytes(range(256)) * (size // 256))
    fd = os.open(path, os.O_RDWR)

    dev = type("Dev", (), {"path": str(path), "_fd": fd, "fd": fd})()
    try:
        reg = Region(dev, RegionInfo(0, 7 | 8, size, 0))  # read, write, mmap
        m = MappedRegion(reg)
        assert reg.read(0x104) == m.read(0x104) == 0x07060504
        for acc in (reg, m):
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            for off in range(0, size, 4):
                acc.read(off)
            grown = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
            assert grown < 64 << 10, (acc, grown)
            for off, width in ((size, 4), (size - 2, 4), (2, 4), (0, 3), (-4, 4)):
                with pytest.raises(RegionAccessError):
                    acc.read(off, width)
        m.close()
    finally:
        os.close(fd)


def test_a_failing_eventfd_does_not_leak_the_earlier_ones(monkeypatch):
    """The third eventfd fails (EMFILE): the two made before it are closed, and the error names
    the fix."""
    import errno as _errno

    from vfioctl import irq as irqmod
    from vfioctl.device import IrqInfo
    from vfioctl.errors import EnvironmentProblem
    made, closed = [], []
    real_close = os.close

    def fake_eventfd(*a):
        if len(made) == 2:
            raise OSError(_errno.EMFILE, "Too many open files")
        fd = os.open(os.devnull, os.O_RDONLY)
        made.append(fd)
        return fd

    def tracking_close(fd):
        closed.append(fd)
        real_close(fd)

    class Dev:
        path = "/dev/vfio/devices/vfio0"
        _irqs: list = []

        def irq_info(self, index):
            return IrqInfo(index, 0x9, 4)

    monkeypatch.setattr(irqmod.os, "eventfd", fake_eventfd)
    monkeypatch.setattr(irqmod.os, "close", tracking_close)
    with pytest.raises(EnvironmentProblem, match="cannot create 3 eventfds") as exc:
        irqmod.IrqSet(Dev(), "msix", 3)
    assert "ulimit -n" in exc.value.hint
    assert sorted(closed) == sorted(made) and len(made) == 2


def test_the_device_holding_root_is_never_taken_even_forced(tmp_path, monkeypatch):
    from vfioctl import binding
    from vfioctl.errors import Refused
    from vfioctl.pci import BlockDevice
    nvme = _fake_pci(tmp_path, "0000:00:0d.0", 0x010802, driver="nvme", group=4)
    root = BlockDevice("nvme0n1p2", "259:2", ("/",), (), False, True)
    monkeypatch.setattr(binding, "block_devices", lambda d: [root])
    with pytest.raises(Refused, match=r"holds the root filesystem \(/ on nvme0n1p2\)") as exc:
        binding.plan([nvme], group=False, force=True)
    assert exc.value.fix is None  # nothing the CLI could offer to override it
    boot = BlockDevice("nvme0n1p1", "259:1", ("/boot",), (), False, True)
    monkeypatch.setattr(binding, "block_devices", lambda d: [boot])
    with pytest.raises(Refused, match="mounted on /boot") as exc:
        binding.plan([nvme], group=False, force=False)
    assert exc.value.fix == "force"
    assert binding.plan([nvme], group=False, force=True) == [nvme]


def test_the_capability_chain_parser_never_hangs_or_misreads_fuzzed():
    """Any buffer and first offset (loops, offsets past the end or inside the header,
    truncation): a list of caps inside the buffer, or a VfioctlError; nothing else."""
    from hypothesis import given, settings, strategies as st_

    from vfioctl.errors import VfioctlError
    from vfioctl.iova import parse_caps

    @settings(max_examples=500, deadline=None)
    @given(st_.binary(max_size=96), st_.integers(min_value=0, max_value=200))
    def check(buf, first):
        try:
            caps = parse_caps(buf, first)
        except VfioctlError:
            return
        offs = [off for _, _, off in caps]
        assert len(offs) == len(set(offs))               # no loop went round twice
        assert all(8 <= off and off + 8 <= len(buf) for off in offs)

    check()
    # a two-element loop and a pointer past the end are errors, not hangs or short lists
    import struct
    loop = bytearray(32)
    loop[8:16] = struct.pack("=HHI", 1, 1, 16)
    loop[16:24] = struct.pack("=HHI", 2, 1, 8)
    with pytest.raises(VfioctlError, match="loops"):
        parse_caps(bytes(loop), 8)
    with pytest.raises(VfioctlError, match="outside the buffer"):
        parse_caps(bytes(32), 40)


def test_an_nvme_multipath_head_and_its_partitions_belong_to_the_controller(tmp_path):
    """Debian's kernels: /dev/nvme0n1 is a virtual multipath head (nvme-subsystem), its path
    nvme0c0n1 lives under the PCI device; the head and its partitions are the controller's."""
    from vfioctl.pci import block_devices
    pci = _fake_pci(tmp_path, "0000:00:0d.0", 0x010802, driver="nvme", group=5)
    path_dev = pci.path / "nvme/nvme0/nvme0c0n1"
    path_dev.mkdir(parents=True)
    head = tmp_path / "devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1"
    (head / "nvme0n1p1").mkdir(parents=True)
    (head / "multipath").mkdir()
    (head / "multipath/nvme0c0n1").symlink_to(path_dev)
    (head / "dev").write_text("259:0\n")
    (head / "nvme0n1p1/dev").write_text("259:1\n")
    other = tmp_path / "devices/virtual/block/loop0"
    other.mkdir(parents=True)
    cls = tmp_path / "class/block"
    cls.mkdir(parents=True)
    (cls / "nvme0n1").symlink_to(head)
    (cls / "nvme0n1p1").symlink_to(head / "nvme0n1p1")
    (cls / "loop0").symlink_to(other)
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self/mountinfo").write_text(
        "30 1 259:1 / /data rw - ext4 /dev/nvme0n1p1 rw\n")
    (proc / "swaps").write_text("Filename Type Size Used Priority\n")
    found = {b.name: b for b in block_devices(pci, proc)}
    assert set(found) == {"nvme0n1", "nvme0n1p1"}
    assert found["nvme0n1p1"].mountpoints == ("/data",)


def test_an_nvme_multipath_head_is_found_by_the_kernels_naming(tmp_path):
    """Debian's 6.12: the head has no multipath/ directory; the controller's path nvme0c0n1
    names the head nvme0n1."""
    from vfioctl.pci import block_devices
    pci = _fake_pci(tmp_path, "0000:00:0d.0", 0x010802, driver="nvme", group=5)
    path_dev = pci.path / "nvme/nvme0/nvme0c0n1"
    path_dev.mkdir(parents=True)
    head = tmp_path / "devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1"
    head.mkdir(parents=True)
    (head / "dev").write_text("259:0\n")
    cls = tmp_path / "class/block"
    cls.mkdir(parents=True)
    (cls / "nvme0n1").symlink_to(head)
    (cls / "nvme0c0n1").symlink_to(path_dev)
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self/mountinfo").write_text("30 1 259:0 / /mnt rw - ext2 /dev/nvme0n1 rw\n")
    (proc / "swaps").write_text("Filename Type Size Used Priority\n")
    found = {b.name: b for b in block_devices(pci, proc)}
    assert "nvme0n1" in found and found["nvme0n1"].mountpoints == ("/mnt",)


def test_import_vfioctl_loads_only_what_is_used():
    """`import vfioctl` loads none of the library (names resolve on first use); opening a
    device (vfioctl.open, the session, both backends) loads neither pyudev (discovery's) nor
    click (the CLI's); the CLI module itself does not load pyudev until a command needs it."""
    import subprocess
    import sys
    code = ("import sys\nimport {mod}\n{use}\n"
            "print(' '.join(sorted(m for m in ('pyudev', 'click', 'ctypes', 'vfioctl.session')"
            " if m in sys.modules)))")
    root = str(Path(__file__).resolve().parents[2])

    def loaded(mod: str, use: str = "") -> str:
        p = subprocess.run([sys.executable, "-c", code.format(mod=mod, use=use)], cwd=root,
                           capture_output=True, text=True, check=True)
        return p.stdout.strip()

    assert loaded("vfioctl") == ""
    assert loaded("vfioctl", "vfioctl.open") == "ctypes vfioctl.session"
    assert loaded("vfioctl.cli") == "click"


def test_hugepage_buffer_errors_name_the_fix(tmp_path, monkeypatch):
    """THP switched off or absent, a hugetlb size the kernel lacks, an unknown kind: each a
    VfioctlError naming the file to change or the kinds there are (a fake /sys/kernel/mm)."""
    from vfioctl import memory
    from vfioctl.errors import EnvironmentProblem, UsageError
    monkeypatch.setattr(memory, "SYS_MM", tmp_path)
    with pytest.raises(EnvironmentProblem, match="not in this kernel"):
        memory.alloc(1, "thp")
    (tmp_path / "transparent_hugepage").mkdir()
    (tmp_path / "transparent_hugepage/enabled").write_text("always madvise [never]\n")
    with pytest.raises(EnvironmentProblem, match="transparent huge pages are disabled") as exc:
        memory.alloc(1, "thp")
    assert exc.value.path.endswith("transparent_hugepage/enabled") and "madvise" in exc.value.hint
    with pytest.raises(EnvironmentProblem, match="this kernel has no 1G hugetlb pages"):
        memory.alloc(1, "1G")
    with pytest.raises(UsageError, match="unknown hugepages kind '4M'"):
        memory.alloc(1, "4M")
    with pytest.raises(UsageError, match="DMA size 0 is not positive"):
        memory.alloc(0)
    (tmp_path / "transparent_hugepage/enabled").write_text("always [madvise] never\n")
    assert len(memory.alloc(1, "thp")) == 2 << 20 and len(memory.alloc(5000)) == 8192


def test_register_value_and_readinto_errors(tmp_path):
    """A value that does not fit the width or is not an integer, and readinto into a read-only
    buffer: one RegionAccessError/UsageError naming the fix, through pread and through mmap."""
    from vfioctl.device import MappedRegion, Region
    from vfioctl.errors import RegionAccessError, UsageError
    path = tmp_path / "bar"
    path.write_bytes(bytes(8192))
    fd = os.open(path, os.O_RDWR)
    dev = type("Dev", (), {"path": str(path), "_fd": fd, "fd": fd})()
    try:
        reg = Region(dev, RegionInfo(0, 15, 8192, 0))
        m = MappedRegion(reg)
        for acc in (reg, m):
            with pytest.raises(RegionAccessError, match="does not fit in 4 bytes") as exc:
                acc.write(8, 1 << 32)
            assert "0xffffffff" in exc.value.hint
            with pytest.raises(RegionAccessError, match="does not fit in 2 bytes"):
                acc.write(8, -1, 2)
            with pytest.raises(RegionAccessError, match="is not an integer"):
                acc.write(8, 1.5)
            with pytest.raises(UsageError, match="cannot read into a read-only bytes"):
                acc.readinto(b"1234", 0)
            buf = bytearray(16)
            assert acc.readinto(buf, 8) == 16
        assert reg.read(8) == 0  # nothing was written by the refused writes
        m.close()
    finally:
        os.close(fd)


def test_the_mode_asked_for_follows_the_environment_as_it_changes(monkeypatch):
    """$VFIOCTL_IOMMU_MODE is read on every open (from os.environ's own dict): set, changed and
    unset while the process runs; an explicit mode wins; an unknown one is a usage error."""
    from vfioctl.backend import choose_mode, requested_mode

    monkeypatch.delenv("VFIOCTL_IOMMU_MODE", raising=False)
    assert requested_mode(None) == "auto"
    monkeypatch.setenv("VFIOCTL_IOMMU_MODE", " vfio_type1_iommu ")
    assert requested_mode(None) == "vfio_type1_iommu"
    assert requested_mode("iommufd") == "iommufd"
    monkeypatch.setenv("VFIOCTL_IOMMU_MODE", "iommufd_compat_type1")
    assert requested_mode(None) == "iommufd_compat_type1"
    monkeypatch.setenv("VFIOCTL_IOMMU_MODE", "typo")
    with pytest.raises(UsageError, match=r"unknown IOMMU mode 'typo' \(from \$VFIOCTL_IOMMU_MODE\)"):
        choose_mode(None, PciDevice("0000:00:01.0"))
    with pytest.raises(UsageError, match=r"unknown IOMMU mode 'type3'$"):
        requested_mode("type3")  # given, not from the variable
    monkeypatch.delenv("VFIOCTL_IOMMU_MODE")
    assert requested_mode(None) == "auto"


def test_a_dataclass_subclass_of_pcidevice_has_its_directories():
    """A subclass made a dataclass gets a generated __init__ in place of PciDevice's: its
    directory strings come on first use (the harness of test_modes subclasses it so)."""
    from dataclasses import dataclass
    from pathlib import Path

    from vfioctl.pci import PciDevice

    @dataclass(frozen=True)
    class Sub(PciDevice):
        pass

    for dev in (Sub("0000:00:0b.0", Path("/x/sys"), Path("/x/dev")),
                PciDevice("0000:00:0b.0", Path("/x/sys"), Path("/x/dev"))):
        assert dev.sysfs_dir == "/x/sys/bus/pci/devices/0000:00:0b.0"
        assert dev.devfs_dir == "/x/dev"


def test_an_fd_owner_whose_init_failed_finalises_quietly(monkeypatch):
    """An owner whose __init__ raised before it had an fd (a node that would not open) is
    finalised without an exception of its own."""
    import gc
    import sys

    from vfioctl.container import Group
    from vfioctl.errors import VfioctlError

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    with pytest.raises(VfioctlError):
        Group(999999, "/nonexistent-devfs")
    gc.collect()
    assert seen == []
