"""The test bed itself: the kernel, the IOMMU and the devices are what the suite relies on.

These run on every kernel of the bed (what vfioctl does where a kernel lacks cdevs is proven in
test_core and test_modes).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from pathlib import Path

import pytest
from vmhelpers import (EDU, E1000E, IGB, IGBVF, IVSHMEM, NVME, SYS_PCI, cdev_of, driver_of,
                       find_all, find_pci, group_of, kernel_features, wait_for)

from vfioctl import uapi


def test_the_iommu_is_on():
    assert Path("/sys/class/iommu/dmar0").is_dir(), "no DMAR unit: is intel_iommu=on set?"
    assert "intel_iommu=on" in open("/proc/cmdline").read().split()
    # every PCI function sits in an IOMMU group
    for d in (SYS_PCI / "devices").iterdir():
        assert (d / "iommu_group").exists(), f"{d.name} has no IOMMU group"


def test_emulated_devices_are_present_with_their_host_drivers():
    assert driver_of(find_pci(NVME)) == "nvme"
    assert driver_of(find_pci(E1000E)) == "e1000e"
    assert driver_of(find_pci(IGB)) == "igb"
    assert len(find_all(EDU)) == 2, "edu on the root bus and edu behind the root port"
    assert driver_of(find_pci(IVSHMEM)) is None


def test_vfio_pci_binds_edu_and_the_kernel_makes_its_nodes(edu):
    assert driver_of(edu) == "vfio-pci"
    group = group_of(edu)
    wait_for(Path(f"/dev/vfio/{group}").exists, what=f"/dev/vfio/{group}")
    if kernel_features()["cdev"]:
        assert cdev_of(edu).exists()
    else:
        assert not Path("/dev/vfio/devices").exists()


def test_the_features_the_kernel_shows_are_consistent():
    have = kernel_features()
    # one container at most serves /dev/vfio/vfio
    assert not (have["legacy_container"] and have["compat_container"])
    # the bind token flag is a cdev feature
    assert have["cdev"] or not have["bind_token"]
    # every kernel of the bed offers at least one way in
    assert have["cdev"] or have["legacy_container"] or have["compat_container"]
    assert Path("/dev/vfio/vfio").exists() == (have["legacy_container"]
                                               or have["compat_container"])


@pytest.mark.requires("sriov")
def test_igb_pf_creates_and_removes_vfs_each_in_its_own_group():
    pf = find_pci(IGB)
    numvfs = SYS_PCI / "devices" / pf / "sriov_numvfs"
    assert int((SYS_PCI / "devices" / pf / "sriov_totalvfs").read_text()) == 7
    assert int(numvfs.read_text()) == 0
    groups_before = set(os.listdir("/sys/kernel/iommu_groups"))
    numvfs.write_text("2")
    try:
        vfs = wait_for(lambda: len(find_all(IGBVF)) == 2 and find_all(IGBVF), what="2 VFs")
        links = sorted(os.path.basename(os.readlink(SYS_PCI / "devices" / pf / f"virtfn{i}"))
                       for i in range(2))
        assert links == vfs
        for vf in vfs:
            assert os.path.basename(os.readlink(SYS_PCI / "devices" / vf / "physfn")) == pf
        groups = {group_of(vf) for vf in vfs}
        assert len(groups) == 2 and group_of(pf) not in groups
        for vf in vfs:
            members = os.listdir(SYS_PCI / "devices" / vf / "iommu_group" / "devices")
            assert members == [vf], f"{vf} shares its group: {members}"
    finally:
        numvfs.write_text("0")
    wait_for(lambda: not find_all(IGBVF), what="the VFs to go")
    assert int(numvfs.read_text()) == 0
    assert set(os.listdir("/sys/kernel/iommu_groups")) == groups_before


@pytest.mark.requires("cdev")
def test_get_info_fails_before_bind_and_succeeds_after(edu):
    node = cdev_of(edu)
    fd = os.open(node, os.O_RDWR)
    iommu = os.open("/dev/iommu", os.O_RDWR)
    try:
        info = uapi.vfio_device_info(argsz=ctypes.sizeof(uapi.vfio_device_info))
        with pytest.raises(OSError) as exc:
            fcntl.ioctl(fd, uapi.VFIO_DEVICE_GET_INFO, info, True)
        assert exc.value.errno == errno.EINVAL

        bind = uapi.vfio_device_bind_iommufd(argsz=ctypes.sizeof(uapi.vfio_device_bind_iommufd),
                                             iommufd=iommu)
        assert fcntl.ioctl(fd, uapi.VFIO_DEVICE_BIND_IOMMUFD, bind, True) == 0
        assert bind.out_devid >= 1

        assert fcntl.ioctl(fd, uapi.VFIO_DEVICE_GET_INFO, info, True) == 0
        assert info.flags & uapi.VFIO_DEVICE_FLAGS_PCI
        assert info.num_regions == uapi.VFIO_PCI_NUM_REGIONS
        assert info.num_irqs == uapi.VFIO_PCI_NUM_IRQS
    finally:
        os.close(fd)
        os.close(iommu)
