"""Region access, mmap, config space, probe and bad input on real devices, in every IOMMU mode
the booted kernel offers (the ``mode`` fixture)."""
from __future__ import annotations

import json
import os
import secrets
import time

import pytest
from vmhelpers import (E1000E, NVME, IVSHMEM, EDU, driver_of, find_pci, kernel_features,
                       offered_modes, run_cli, sysfs_bind)

import vfioctl
from vfioctl.errors import RegionAccessError

EDU_ID = 0x010000ED


# --- edu through pread/pwrite and mmap --------------------------------------------------------
def test_edu_id_liveness_factorial_through_pread_pwrite(edu, mode):
    with vfioctl.open(edu, iommu_mode=mode) as s:
        assert s.iommu_mode == mode
        bar0 = s.region("bar0")
        assert bar0.read(0x00) == EDU_ID
        for v in (0x12345678, 0, 0xFFFFFFFF):
            bar0.write(0x04, v)
            assert bar0.read(0x04) == (~v) & 0xFFFFFFFF
        bar0.write(0x08, 10)
        deadline = time.monotonic() + 10
        while bar0.read(0x20) & 0x01 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert bar0.read(0x20) & 0x01 == 0
        assert bar0.read(0x08) == 3628800


def test_edu_id_liveness_factorial_through_mmap(edu, mode):
    with vfioctl.open(edu, iommu_mode=mode) as s:
        m = s.region("bar0").mmap()
        assert m.read(0x00) == EDU_ID
        m.write(0x04, 0xA5A5F00F)
        assert m.read(0x04) == 0x5A5A0FF0
        m.write(0x08, 7)
        deadline = time.monotonic() + 10
        while m.read(0x20) & 0x01 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert m.read(0x08) == 5040
        m.close()  # cached register cells die with the mapping
        with pytest.raises(RegionAccessError, match="the mmap of bar0 is closed") as exc:
            m.read(0x00)
        assert exc.value.hint == "mmap the region again"


def test_cli_read_write_on_edu(edu, mode):
    m = ("--iommu-mode", mode)
    rc, out, err = run_cli("read", edu, "bar0", "0", *m, fresh=True)  # the entry point itself
    assert (rc, out) == (0, "0x010000ed\n"), err
    rc, out, err = run_cli("read", edu, "bar0", "0", "--mmap", "--json", *m)
    assert rc == 0, err
    assert json.loads(out)["values"] == [EDU_ID]
    assert json.loads(out)["iommu_mode"] == mode
    rc, out, err = run_cli("write", edu, "bar0", "4", "0x0000ffff", *m)
    assert rc == 0, err
    # a new session: vfio-pci does not reset edu between opens; liveness keeps the value
    rc, out, err = run_cli("read", edu, "bar0", "0x4", "--width", "4", "--count", "2", *m)
    assert rc == 0, err
    assert out.splitlines()[0] == "0xffff0000"
    rc, out, err = run_cli("read", edu, "config", "0", "-w", "2", "-n", "2", *m)
    assert out.splitlines() == ["0x1234", "0x11e8"], err
    rc, out, err = run_cli("dump", edu, "config", "0", "16", *m)
    assert rc == 0 and out.startswith("00000000  34 12 e8 11"), out + err
    # the environment variable chooses the mode as the option does
    env_rc, env_out, _ = run_cli("read", edu, "bar0", "0", "--json", env={"VFIOCTL_IOMMU_MODE": mode})
    assert env_rc == 0 and json.loads(env_out)["iommu_mode"] == mode


def test_info_lists_edu_regions_and_irqs(edu, mode):
    rc, out, err = run_cli("info", edu, "--json", "--iommu-mode", mode)
    assert rc == 0, err
    info = json.loads(out)
    assert info["iommu_mode"] == mode
    ranges = info["iommu"]["iova_ranges"]
    assert ranges and all(r[0] <= r[1] for r in ranges)
    if mode == "iommufd":
        assert info["devid"] >= 1 and info["device_fd_from"].startswith("/dev/vfio/devices/")
    else:
        assert info["devid"] is None and info["device_fd_from"].startswith("/dev/vfio/")
        assert info["iommu"]["iova_pgsizes"] & 4096
        assert info["container_kind"] == ("iommufd" if "compat" in mode else "legacy")
    regions = {r["name"]: r for r in info["regions"]}
    assert regions["bar0"]["size"] == 1 << 20 and regions["bar0"]["flag_names"] == [
        "READ", "WRITE", "MMAP"]
    assert regions["config"]["offset"] == 7 << 40 and regions["config"]["size"] == 256
    assert "vga" not in regions
    assert [i["name"] for i in info["irqs"]][:3] == ["intx", "msi", "msix"]
    assert info["flag_names"] == ["PCI"]


# --- ivshmem: the BAR is a host file ----------------------------------------------------------
def test_ivshmem_mmap_sees_host_pattern_and_writes_reach_host(ivshmem, workdir, mode):
    host = (workdir / "host-pattern.bin").read_bytes()
    mine = f"vfioctl-guest-pattern-{secrets.token_hex(8)}".encode()
    with vfioctl.open(ivshmem, iommu_mode=mode) as s:
        shm = s.region("bar2")
        assert shm.size == 1 << 20
        m = shm.mmap()
        assert m.read_bytes(0, len(host)) == host
        m.write_bytes(0x1000, mine)
        m.write(0x2000, 0x1122334455667788, 8)
        assert shm.read_bytes(0x1000, len(mine)) == mine  # and pread agrees
    # the host checks the backing file after the VM exits (tests/after_vm)
    (workdir / "guest-pattern.bin").write_bytes(mine)


def test_typed_views_are_width_exact_and_bounds_checked(ivshmem, mode):
    """regs.u32[i] and friends: loads and stores at offset i * width of the BAR, agreeing with
    the width-exact accessors and pread; an index past the area is IndexError; the views die
    with the mapping."""
    with vfioctl.open(ivshmem, iommu_mode=mode) as s:
        shm = s.region("bar2")
        m = shm.mmap()
        u32, u64, u8 = m.u32, m.u64, m.u8
        assert len(u32) == (1 << 20) // 4 and len(u64) == (1 << 20) // 8
        u32[0x3000 // 4] = 0xCAFEF00D
        assert m.read(0x3000, 4) == 0xCAFEF00D and shm.read(0x3000, 4) == 0xCAFEF00D
        u64[0x3008 // 8] = 0x0123456789ABCDEF
        assert shm.read_bytes(0x3008, 8) == bytes.fromhex("efcdab8967452301")
        assert u8[0x3008] == 0xEF and m.u16[0x3008 // 2] == 0xCDEF
        with pytest.raises(IndexError):
            u32[len(u32)]
        with pytest.raises(ValueError):  # the width is checked too
            u32[0] = 1 << 32
        m.close()
        with pytest.raises(ValueError):  # released with the mapping, never a stale pointer
            u32[0]


# --- config space equals sysfs ----------------------------------------------------------------
@pytest.mark.parametrize("ids", [EDU, IVSHMEM, NVME, E1000E])
def test_config_region_equals_sysfs_config(ids, mode):
    bdf = find_pci(ids)
    before = driver_of(bdf)
    sysfs_bind(bdf, "vfio-pci")
    try:
        with vfioctl.open(bdf, iommu_mode=mode) as s:
            # read sysfs while the device is open: a kernel with runtime PM (Debian's) parks an
            # idle vfio-pci device in D3hot, and PMCSR would differ from the open device's D0
            sysfs_cfg = open(f"/sys/bus/pci/devices/{bdf}/config", "rb").read()
            cfg = s.region("config")
            n = min(cfg.size, len(sysfs_cfg), 256)
            assert cfg.read_bytes(0, n) == sysfs_cfg[:n]
    finally:
        sysfs_bind(bdf, before)


# --- probe ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["edu", "ivshmem"])
def test_probe_table_passes(fixture, request, mode):
    bdf = request.getfixturevalue(fixture)
    if fixture == "edu":  # edu keeps its registers across opens (no reset method): a marker
        with vfioctl.open(bdf, iommu_mode=mode) as s:
            s.region("bar0").write(0x04, 0x5A5AA5A5)
    rc, out, err = run_cli("probe", bdf, "--json", "--iommu-mode", mode)
    report = json.loads(out)
    bad = [c for c in report["checks"] if not c["ok"]]
    assert rc == 0 and report["ok"] and not bad, (bad, err)
    assert report["iommu_mode"] == mode
    names = {c["name"]: c for c in report["checks"]}
    if mode == "iommufd":
        assert report["devid"] >= 1
        assert names["before bind: mmap bar0"]["observed"] == "EINVAL"
        assert names["BIND fd of /dev/null"]["observed"] == "EBADFD"
        assert names["BIND closed fd number"]["observed"] == "EBADF"
        assert names["after DETACH: BIND again"]["observed"] == "EINVAL"
        assert names["reopened: VFIO_DEVICE_GET_INFO"]["observed"] == "EINVAL"
        assert any(n.startswith("open /dev/vfio/") and c["observed"] == "EBUSY"
                   for n, c in names.items())
    else:
        assert names["open the group node a second time"]["observed"] == "EBUSY"
        assert names["VFIO_GROUP_GET_DEVICE_FD before the group has a container"][
            "observed"] == "EINVAL"
        assert names["device fd: config vendor:device equals sysfs"]["observed"] == (
            "1234:11e8" if fixture == "edu" else "1af4:1110")
        assert len(report["checks"]) >= 25
    assert not any("RESET" in n for n in names), "probe resets only with --reset"
    if fixture == "edu":  # probe touched nothing: the marker is still there
        with vfioctl.open(bdf, iommu_mode=mode) as s:
            assert s.region("bar0").read(0x04) == (~0x5A5AA5A5) & 0xFFFFFFFF
    rc, out, _ = run_cli("probe", bdf, "--iommu-mode", mode)
    assert rc == 0 and "PASS" in out and "FAIL" not in out


@pytest.mark.requires("cdev")
def test_probe_resets_only_when_asked(edu):
    rc, out, err = run_cli("probe", edu, "--reset", "--json")
    names = {c["name"]: c for c in json.loads(out)["checks"]}
    assert rc == 0, err
    assert names["before bind: VFIO_DEVICE_RESET"]["observed"] == "EINVAL"
    assert names["after bind: VFIO_DEVICE_RESET"]["observed"] == "EINVAL"  # edu: no method


@pytest.mark.requires("no-cdev")
def test_probe_without_cdevs_runs_the_group_path_and_says_why(edu):
    rc, out, err = run_cli("probe", edu)
    assert rc == 0, out + err
    first = out.splitlines()[0]
    assert first.startswith("note: the cdev checks could not run: this kernel lacks "
                            "CONFIG_IOMMUFD"), out
    assert "group path" in out and "FAIL" not in out


@pytest.mark.requires("no-cdev")
def test_explicit_iommufd_mode_without_it_is_one_line(edu):
    rc, out, err = run_cli("read", edu, "bar0", "0", "--iommu-mode", "iommufd")
    _assert_clean_error(rc, out, err, "IOMMU mode iommufd is not available on this host",
                        "CONFIG_IOMMUFD", "this host offers: vfio_type1_iommu, "
                        "vfio_type1v2_iommu")
    assert len(err.strip().splitlines()) == 2


def test_a_group_mode_of_the_other_container_is_one_line(edu):
    """Each kernel of the bed has one kind of container (VFIO's own or iommufd's compat one): a
    group-path mode of the other kind is refused up front, naming who serves /dev/vfio/vfio,
    and the modes this host does offer; nothing is opened."""
    from vfioctl.backend import MODES

    offered = offered_modes()
    other = [m for m in MODES if m != "iommufd" and m not in offered]
    assert len(other) == 2, offered
    served = ("is VFIO's own container" if kernel_features()["legacy_container"] else
              "is served by iommufd")
    for mode in other:
        rc, out, err = run_cli("read", edu, "bar0", "0", "--iommu-mode", mode)
        _assert_clean_error(rc, out, err, f"IOMMU mode {mode} is not available on this host",
                            f"/dev/vfio/vfio {served}", "this host offers: " + ", ".join(offered))
        assert len(err.strip().splitlines()) == 2


# --- bad input: one line, the fix, exit 2 -------------------------------------------------------
def _assert_clean_error(rc, out, err, *needles):
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), err
    for n in needles:
        assert n in err, err


def test_error_nonexistent_device():
    _assert_clean_error(*run_cli("probe", "0000:00:1e.7"), "no PCI device 0000:00:1e.7",
                        "vfioctl list")


def test_error_device_not_on_vfio_pci():
    nvme = find_pci(NVME)
    assert driver_of(nvme) == "nvme"
    _assert_clean_error(*run_cli("read", nvme, "bar0", "0"), "not bound to vfio-pci",
                        f"vfioctl bind {nvme}")


@pytest.mark.requires("cdev")
def test_error_no_dev_iommu(edu):
    os.rename("/dev/iommu", "/dev/iommu.hidden")
    try:
        _assert_clean_error(*run_cli("read", edu, "bar0", "0", "--iommu-mode", "iommufd"),
                            "IOMMU mode iommufd is not available", "no /dev/iommu")
        # auto falls back to the group path where the kernel has a container
        rc, out, err = run_cli("read", edu, "bar0", "0", "--json")
        assert rc == 0, err
        assert json.loads(out)["iommu_mode"] in ("vfio_type1v2_iommu", "iommufd_compat_type1v2")
    finally:
        os.rename("/dev/iommu.hidden", "/dev/iommu")


def test_error_unknown_iommu_mode(edu):
    _assert_clean_error(*run_cli("read", edu, "bar0", "0", "--iommu-mode", "type3"),
                        "unknown IOMMU mode 'type3'", "auto, iommufd, iommufd_compat_type1")


@pytest.mark.parametrize("command", [("probe",), ("read", "bar0", "0")])
def test_a_mode_that_is_no_mode_is_named_before_the_devices_driver(nvme, command):
    """nvme on its host driver with --iommu-mode type3: the mode is the error (the driver would
    be the next one), and the device stays on nvme."""
    name, *rest = command
    rc, out, err = run_cli(name, nvme, *rest, "--iommu-mode", "type3")
    _assert_clean_error(rc, out, err, "unknown IOMMU mode 'type3'")
    assert "vfio-pci" not in err
    assert driver_of(nvme) == "nvme"


def test_error_permission_denied(edu):
    _assert_clean_error(*run_cli("read", edu, "bar0", "0", user=65534), "permission denied",
                        "root")


def test_error_offset_past_region(edu):
    _assert_clean_error(*run_cli("read", edu, "bar0", "0x100000"), "past the end")


def test_error_width_does_not_divide_offset(edu):
    _assert_clean_error(*run_cli("read", edu, "bar0", "2", "--width", "4"), "not aligned")


def test_error_unknown_region_name(edu):
    _assert_clean_error(*run_cli("read", edu, "bar9x", "0"), "unknown region", "config, bar0")


def test_error_mmap_of_a_region_that_cannot_be_mapped(edu):
    _assert_clean_error(*run_cli("read", edu, "config", "0", "--mmap"), "cannot be mmapped",
                        "drop --mmap")


def test_error_value_wider_than_width(edu):
    _assert_clean_error(*run_cli("write", edu, "bar0", "4", "0x1ffff", "-w", "2"),
                        "does not fit in 2 bytes")


def test_library_errors_are_typed(edu, mode):
    with vfioctl.open(edu, iommu_mode=mode) as s:
        with pytest.raises(RegionAccessError):
            s.region("bar0").read(0x100000)
        with pytest.raises(RegionAccessError):
            s.region("bar1")  # edu has one BAR


@pytest.mark.requires("cdev")
def test_probe_race_bind_against_concurrent_access(edu):
    """Workers hammer fresh cdev fds while BIND runs: nothing succeeds before BIND was issued,
    nothing fails with EINVAL after it returned, every success sees an opened device."""
    rc, out, err = run_cli("probe", edu, "--race", "--seconds", "3", "--json")
    report = json.loads(out)
    assert rc == 0 and report["ok"] and report["violations"] == [], (report, err)
    assert report["rounds"] >= 3
    seen = {(c["phase"], c["op"], c["outcome"]) for c in report["counts"]}
    for op in ("GET_INFO", "pread config", "mmap bar0"):
        assert ("before", op, "EINVAL") in seen, seen  # blocked before BIND ...
        assert ("after", op, "OK") in seen, seen       # ... and open after it
    rc, out, err = run_cli("probe", edu, "--race", "--iommu-mode", "vfio_type1v2_iommu")
    assert rc == 2 and "--race proves the cdev's blocked state" in err, err
