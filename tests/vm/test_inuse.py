"""In use means in use, on every kernel: bind refuses a disk controller whose disk is held by
anything the kernel knows of (an exclusive opener, a device-mapper volume, swap), naming the
holder; the device stays on its driver and nothing is recorded."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from vmhelpers import (STATE, XHCI, driver_of, find_pci, nvme_disk, nvme_node, run_cli,
                       sysfs_bind, wait_for)



@pytest.fixture
def disk(nvme):
    """nvme's BDF and its disk's node, as the kernel named it (the conftest's nvme fixture
    returns nvme to its driver whatever a test did)."""
    yield nvme, Path(nvme_disk(nvme))


def refused(bdf: str, *needles: str) -> None:
    rc, out, err = run_cli("bind", bdf)
    assert rc == 2 and "Traceback" not in err, (rc, out, err)
    for n in needles:
        assert n in err, err
    assert driver_of(bdf) == "nvme"
    assert bdf not in (json.loads(STATE.read_text()) if STATE.exists() else {})


def refused_while_mounted(bdf: str, node: Path, tmp_path: Path) -> None:
    """bind refuses ``bdf`` while its disk ``node`` is mounted, naming the disk and where."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ext2", "-o", "ro", node, str(mnt)], check=True)
    try:
        refused(bdf, f"block device {node.name} is mounted on {mnt}", "--force")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_mounted_filesystem_is_named(disk, tmp_path):
    refused_while_mounted(*disk, tmp_path)


def test_a_renamed_controllers_mounted_disk_is_named(disk, tmp_path):
    """The kernel names a controller that probes while its old node is still held ``nvme1``
    (on a kernel without nvme multipath its disk too: ``nvme1n1``); the refusal follows the
    kernel's names, not ``nvme0``'s."""
    bdf, _ = disk
    held = nvme_node(bdf)
    fd = os.open(held, os.O_RDONLY)
    try:
        sysfs_bind(bdf, None)
        sysfs_bind(bdf, "nvme")
        assert nvme_node(bdf) != held
    finally:
        os.close(fd)
    try:
        refused_while_mounted(bdf, Path(nvme_disk(bdf)), tmp_path)
    finally:
        sysfs_bind(bdf, None)  # back to the kernel's first name, now free
        sysfs_bind(bdf, "nvme")
    assert nvme_node(bdf) == held


def test_an_exclusive_holder_is_seen_by_asking_the_kernel(disk):
    bdf, node = disk
    fd = os.open(node, os.O_RDONLY | os.O_EXCL)  # what a mount of any filesystem does
    try:
        refused(bdf, f"block device {node.name} is held: the kernel refuses an exclusive open",
                "--force")
    finally:
        os.close(fd)


def test_a_device_mapper_volume_on_the_disk_is_named(disk):
    bdf, node = disk
    subprocess.run(["modprobe", "dm-mod"], capture_output=True)  # a module on Debian's kernel
    sectors = int(open(f"/sys/block/{node.name}/size").read())
    subprocess.run(["dmsetup", "create", "vfioctl-test", "--table",
                    f"0 {sectors} linear {node} 0"], check=True, capture_output=True)
    try:
        refused(bdf, f"block device {node.name} is held by dm-", "(vfioctl-test)")
    finally:
        # --retry: udev may still be probing the new dm device (EBUSY for a moment)
        subprocess.run(["dmsetup", "remove", "--retry", "vfioctl-test"], check=True)


def test_a_filesystem_on_a_volume_on_the_disk_is_named_with_its_mount_point(disk, tmp_path):
    """Layered: ext2 on a device-mapper volume on the disk. The disk's own mount check sees
    nothing; the refusal names the volume and where it is mounted."""
    bdf, node = disk
    subprocess.run(["modprobe", "dm-mod"], capture_output=True)
    sectors = int(open(f"/sys/block/{node.name}/size").read())
    subprocess.run(["dmsetup", "create", "vfioctl-layer", "--table",
                    f"0 {sectors} linear {node} 0"], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        # the volume's node as devtmpfs makes it (/dev/dm-N; no udev makes /dev/mapper links)
        dm = wait_for(lambda: next((b.name for b in Path("/sys/block").iterdir()
                                    if (b / "dm/name").exists()
                                    and (b / "dm/name").read_text().strip() == "vfioctl-layer"),
                                   None), what="the dm volume")
        subprocess.run(["mount", "-t", "ext2", "-o", "ro", f"/dev/{dm}", str(mnt)], check=True)
        try:
            refused(bdf, f"block device {node.name} is held by dm-",
                    f"(vfioctl-layer), mounted on {mnt}")
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["dmsetup", "remove", "--retry", "vfioctl-layer"], check=True)


@pytest.mark.requires("usb")
def test_a_usb_controller_with_a_keyboard_is_refused_naming_it():
    xhci = find_pci(XHCI)
    assert driver_of(xhci) == "xhci_hcd"
    rc, out, err = run_cli("bind", xhci)
    assert rc == 2 and "Traceback" not in err, (rc, out, err)
    assert "USB host controller with devices attached" in err and "QEMU USB Keyboard" in err
    assert "--force" in err
    assert driver_of(xhci) == "xhci_hcd"
    assert xhci not in (json.loads(STATE.read_text()) if STATE.exists() else {})


def test_swap_on_the_disk_is_named(disk):
    bdf, node = disk
    subprocess.run(["mkswap", node], check=True, capture_output=True)
    try:
        subprocess.run(["swapon", node], check=True, capture_output=True)
        try:
            refused(bdf, f"block device {node.name} is in use as swap", f"swapoff {node}")
        finally:
            subprocess.run(["swapoff", node], check=True)
    finally:  # the ext2 filesystem the other tests mount
        subprocess.run(["mkfs.ext2", "-q", "-F", "-L", "vfioctl", node], check=True)
