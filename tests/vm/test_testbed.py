"""The test bed itself: the kernel, the IOMMU and the devices are what the suite relies on."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os

import pytest
from vmhelpers import EDU, E1000E, IVSHMEM, NVME, cdev_of, driver_of, find_pci

from vfioctl import uapi


def test_kernel_has_iommufd_and_an_enabled_iommu():
    assert os.path.exists("/dev/iommu")
    assert os.listdir("/sys/class/iommu"), "no IOMMU registered: is intel_iommu=on set?"
    assert "intel_iommu=on" in open("/proc/cmdline").read()


def test_emulated_devices_are_present_with_their_drivers():
    assert driver_of(find_pci(NVME)) == "nvme"
    assert driver_of(find_pci(E1000E)) == "e1000e"
    for ids in (EDU, IVSHMEM):
        assert find_pci(ids)


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
