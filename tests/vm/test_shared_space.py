"""Two devices in one DMA space (``vfioctl.open(B, share_with=session_of_A)``), as the kernel
selftest library opens several devices on one iommu: one IOAS or one container, each device
reaching what either session mapped, the space living until its last session closes; and,
where the mode maps device memory (VFIO's type1 container), edu's DMA engine copying to and
from ivshmem's BAR2 through the IOMMU, peer to peer, seen in the host file behind that BAR."""
from __future__ import annotations

import errno
import json
import os
import threading

import pytest
from vmhelpers import (EDU_BUF, IVSHMEM, MASK28, Edu, driver_of, find_all, group_of, run_cli,
                       sysfs_bind)

import vfioctl
from vfioctl.errors import EnvironmentProblem, UsageError

N = 4096
#: where these tests write in ivshmem's 1 MiB BAR2: its last 64 KiB, away from the patterns
#: test_core leaves for the host's after-VM check (offsets 0, 0x1000, 0x2000), and put back
SCRATCH = 0xF0000


def _vfio_fds() -> list[str]:
    """This process's fds of VFIO and iommufd: their nodes, and a group's device fds (not any
    path with "vfio" in it: the bed's work directory is /tmp/vfioctl-vm-...)."""
    out = []
    for n in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{n}")
        except OSError:
            continue
        if target.startswith(("/dev/vfio/", "anon_inode:[vfio")) or target == "/dev/iommu":
            out.append(target)
    return out


def test_a_second_device_shares_the_space_and_outlives_the_first_session(edu, ivshmem, mode):
    """ivshmem joins edu's space: the same IOAS (one iommufd) or container (both groups in
    it); edu's DMA reads a buffer ivshmem's session mapped; closing edu's session leaves the
    space to ivshmem's, and the last close closes every fd."""
    assert _vfio_fds() == []
    a = vfioctl.open(edu, iommu_mode=mode)
    try:
        a.device.bus_master(True)
        b = vfioctl.open(ivshmem, share_with=a)
        try:
            assert b.iommu_mode == a.iommu_mode == mode and b.dma is a.dma
            if mode == "iommufd":
                assert b.ioas.id == a.ioas.id and b.iommufd is a.iommufd
                assert b.devid != a.devid  # two devices bound to the one iommufd
                assert _vfio_fds().count("/dev/iommu") == 1
            else:
                groups = sorted({int(group_of(edu)), int(group_of(ivshmem))})
                assert len(groups) == 2 and a.backend.describe()["groups"] == groups
                assert b.container is a.container
            src = b.dma_alloc(N, limit=MASK28)  # mapped by ivshmem's session
            dst = a.dma_alloc(N, limit=MASK28)
            data = os.urandom(N)
            src.write(data)
            e = Edu(a)
            e.dma(src.iova, EDU_BUF, N, to_ram=False)
            e.dma(EDU_BUF, dst.iova, N, to_ram=True)
            assert dst.read() == data
            mapped = {m.iova for m in a.dma.mappings}
            a.close()
            assert a.device.closed and not b.device.closed
            assert {m.iova for m in b.dma.mappings} == mapped - {dst.iova}  # a's buffer went
            bar2 = b.region("bar2")  # ivshmem's device still works
            was = bar2.read(SCRATCH, 4)
            bar2.write(SCRATCH, 0x5A5AA5A5, 4)
            assert bar2.read(SCRATCH, 4) == 0x5A5AA5A5
            bar2.write(SCRATCH, was, 4)
            more = b.dma_alloc(N)  # the space still maps
            assert more.iova in {m.iova for m in b.dma.mappings}
        finally:
            b.close()
    finally:
        a.close()
    assert _vfio_fds() == []
    with vfioctl.open(edu, iommu_mode=mode) as again:  # nothing of the shared space is held
        assert again.dma.mappings == []


def test_devices_open_into_one_space_from_threads_at_once(edu, mode):
    """As the kernel's vfio_pci_device_init_perf_test: both ivshmems open into edu's space
    from a thread each, released by a barrier together, and close the same way; the space
    counts them, the kernel holds each device in it, and the last close leaves nothing open."""
    peers = find_all(IVSHMEM)
    assert len(peers) == 2, "the bed has two ivshmems"
    before = {bdf: driver_of(bdf) for bdf in peers}
    for bdf in peers:
        sysfs_bind(bdf, "vfio-pci")
    try:
        with vfioctl.open(edu, iommu_mode=mode) as a:
            barrier = threading.Barrier(len(peers))
            opened, errors = {}, []

            def each(bdf, work):
                try:
                    barrier.wait(timeout=60)
                    work(bdf)
                except BaseException as exc:  # noqa: BLE001  (reported below)
                    errors.append(f"{bdf}: {exc!r}")

            def run(work):
                threads = [threading.Thread(target=each, args=(bdf, work)) for bdf in peers]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join(timeout=120)
                assert not errors, errors

            run(lambda bdf: opened.__setitem__(bdf, vfioctl.open(bdf, share_with=a)))
            assert a.backend.users == 3
            if mode == "iommufd":
                assert len({a.devid, *(s.devid for s in opened.values())}) == 3
            else:
                assert sorted(a.backend.groups) == sorted(int(group_of(b)) for b in [edu, *peers])
            for s in opened.values():
                assert s.dma is a.dma
                bar2 = s.region("bar2")
                was = bar2.read(SCRATCH, 4)
                bar2.write(SCRATCH, 0xC0FFEE, 4)
                assert bar2.read(SCRATCH, 4) == 0xC0FFEE
                bar2.write(SCRATCH, was, 4)
            run(lambda bdf: opened[bdf].close())
            assert a.backend.users == 1 and all(s.device.closed for s in opened.values())
            assert a.region("bar0").read(0, 4) == 0x010000ED
        assert _vfio_fds() == []
    finally:
        for bdf in peers:
            sysfs_bind(bdf, before[bdf])


def test_sharing_a_space_needs_an_open_session_of_its_mode(edu, ivshmem, mode):
    with vfioctl.open(edu, iommu_mode=mode) as a:
        other = "vfio_type1v2_iommu" if mode == "iommufd" else "iommufd"
        with pytest.raises(UsageError, match=f"in mode {other}: that space is {mode}'s") as exc:
            vfioctl.open(ivshmem, iommu_mode=other, share_with=a)
        assert exc.value.hint == f"leave the IOMMU mode out, or ask for {mode}"
        assert a.backend.users == 1
        with vfioctl.open(ivshmem, iommu_mode=mode, share_with=a) as b:
            assert a.backend.users == 2 and b.dma is a.dma
        assert a.backend.users == 1
    with pytest.raises(UsageError, match="that session is closed"):
        vfioctl.open(ivshmem, share_with=a)
    assert _vfio_fds() == []


def test_edu_dma_reaches_ivshmem_bar_peer_to_peer(edu, ivshmem, type1_mode, workdir):
    """ivshmem's BAR2 (RAM behind a BAR: the file WORKDIR/ivshmem.bin on the host) mapped into
    the container edu shares: edu copies a page from it into RAM, and from RAM into it; the
    second copy is read back in the host file."""
    with vfioctl.open(edu, iommu_mode=type1_mode) as a, \
            vfioctl.open(ivshmem, share_with=a) as b:
        a.device.bus_master(True)
        bar = b.region("bar2").mmap()
        mm = bar.areas[0][1]
        peer = a.dma.map(mm, limit=MASK28)  # the BAR, at an IOVA edu reaches
        ram = a.dma_alloc(N, limit=MASK28)
        e = Edu(a)
        one, two = SCRATCH, SCRATCH + N  # two pages of the BAR, put back at the end
        was = mm[one:two + N]
        first = os.urandom(N)
        mm[one:one + N] = first
        e.dma(peer.iova + one, EDU_BUF, N, to_ram=False)  # BAR -> edu
        e.dma(EDU_BUF, ram.iova, N, to_ram=True)          # edu -> RAM
        assert ram.read() == first
        second = os.urandom(N)
        ram.write(second)
        e.dma(ram.iova, EDU_BUF, N, to_ram=False)         # RAM -> edu
        e.dma(EDU_BUF, peer.iova + two, N, to_ram=True)   # edu -> the BAR's other page
        assert mm[two:two + N] == second
        with open(workdir / "ivshmem.bin", "rb") as f:  # the host's file behind the BAR
            f.seek(two)
            assert f.read(N) == second
        assert a.dma.unmap(peer.iova) == len(mm)
        mm[one:two + N] = was
        del mm
        bar.close()


def test_a_group_open_with_another_container_cannot_join(edu, ivshmem, group_mode):
    """A group is in one container at a time: a session's group cannot join a second space."""
    with vfioctl.open(edu, iommu_mode=group_mode) as a, \
            vfioctl.open(ivshmem, iommu_mode=group_mode) as b:
        with pytest.raises(UsageError, match=f"IOMMU group {group_of(edu)} of {edu} is open in "
                                             "this process with another container"):
            vfioctl.open(edu, share_with=b)
        assert a.backend.users == 1 and b.backend.users == 1
        assert sorted(b.backend.groups) == [int(group_of(ivshmem))]


@pytest.mark.requires("cdev")
@pytest.mark.parametrize("shared", [True, False], ids=["same space", "own space"])
def test_a_device_open_through_its_cdev_does_not_open_again(edu, shared):
    """iommufd mode: a second open of the same device, in the same space or its own, binds its
    cdev again; the kernel refuses (EINVAL: a device is bound once), the error names who holds
    it, and the first session is unharmed."""
    with vfioctl.open(edu, iommu_mode="iommufd") as a:
        with pytest.raises(EnvironmentProblem, match=f"{edu} is open already, bound through its "
                                                      rf"cdev by \S+ \(pid {os.getpid()}\)"
                           ) as exc:
            vfioctl.open(edu, iommu_mode="iommufd", share_with=a if shared else None)
        assert exc.value.op == "VFIO_DEVICE_BIND_IOMMUFD" and exc.value.errno == errno.EINVAL
        assert exc.value.hint == "close the other session of the device first"
        assert a.backend.users == 1
        assert a.region("bar0").read(0, 4) == 0x010000ED
    assert _vfio_fds() == []


@pytest.mark.requires("cdev")
def test_the_cli_names_who_holds_a_device_open_through_its_cdev(edu):
    """The same refusal through the command line: one error naming this process, exit 2."""
    with vfioctl.open(edu, iommu_mode="iommufd"):
        rc, out, err = run_cli("read", edu, "bar0", "0", "--iommu-mode", "iommufd", fresh=True)
        assert rc == 2, out + err
        assert f"error: {edu} is open already, bound through its cdev by " in err, err
        assert f"(pid {os.getpid()})" in err and "Traceback" not in err
        assert "hint: close the other session of the device first" in err
        rc, out, err = run_cli("read", edu, "bar0", "0", "--iommu-mode", "iommufd", "--json",
                               fresh=True)
        report = json.loads(out)
        assert rc == 2 and report["error"] == "EnvironmentProblem", out + err
        assert report["errno"] == "EINVAL" and report["op"] == "VFIO_DEVICE_BIND_IOMMUFD"
