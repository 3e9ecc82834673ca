"""The DMA drivers (vfioctl.drivers) and ``vfioctl selftest`` on edu and the igb PF, in every
IOMMU mode the booted kernel offers: the device itself copies memory through the IOMMU and
raises its interrupt."""
from __future__ import annotations

import json
import os

import pytest
from vmhelpers import EDU, IGB, IRQ_WAIT_S, IVSHMEM, NVME, driver_of, find_pci, run_cli

import vfioctl
from vfioctl.errors import UsageError

CHECKS = ["memcpy_success", "memcpy_from_unmapped_iova", "memcpy_to_unmapped_iova", "send_msi",
          "mix_and_match", "memcpy_storm"]


def _selftest(bdf, mode):
    rc, out, err = run_cli("selftest", bdf, "--iommu-mode", mode, "--seconds", "0.3", "--json")
    report = json.loads(out) if out else {}
    return rc, report, err


def test_selftest_passes_on_edu(edu, mode):
    rc, r, err = _selftest(edu, mode)
    assert rc == 0, (err, json.dumps(r, indent=1))
    assert r["driver"] == "edu" and r["iommu_mode"] == mode and r["ok"]
    assert [c["name"] for c in r["checks"]] == CHECKS and all(c["ok"] for c in r["checks"])
    assert r["storm_mb_per_s"] > 0
    fault = r["checks"][2]["observed"]
    assert "fault addr" in fault and "Write" in fault, fault  # the IOMMU said why


def test_selftest_passes_on_igb(igb, mode):
    rc, r, err = _selftest(igb, mode)
    assert rc == 0, (err, json.dumps(r, indent=1))
    assert r["driver"] == "igb" and r["ok"] and [c["name"] for c in r["checks"]] == CHECKS
    assert r["storm_mb_per_s"] > 0


def test_selftest_fails_when_the_unmapped_page_is_still_mapped(edu, mode):
    """The unmapped checks can fail: with the unmap of their page dropped (injected here, as a
    leaking IOMMU would behave), the device reads and overwrites that page, and the rows say
    so; the run exits 1."""
    from vfioctl.iova import DmaSpace

    def inject():
        real = DmaSpace.unmap
        calls = []

        def leaky_unmap(self, iova, length=None):
            calls.append(iova)
            if len(calls) == 1:  # the selftest's "unmapped" page: leave it mapped
                return 0
            return real(self, iova, length)
        DmaSpace.unmap = leaky_unmap

    rc, out, err = run_cli("selftest", edu, "--iommu-mode", mode, "--seconds", "0.1", "--json",
                           inject=inject)
    r = json.loads(out)
    by = {c["name"]: c for c in r["checks"]}
    assert rc == 1 and not r["ok"], err
    assert not by["memcpy_from_unmapped_iova"]["ok"]
    assert "the unmapped page's data arrived" in by["memcpy_from_unmapped_iova"]["observed"]
    assert not by["memcpy_to_unmapped_iova"]["ok"]
    assert "the unmapped page was written" in by["memcpy_to_unmapped_iova"]["observed"]
    assert by["memcpy_success"]["ok"] and by["send_msi"]["ok"]


def test_igb_recovers_when_a_copy_never_completes(igb, mode):
    """A copy whose frame is never received (the receiver switched off behind the driver's
    back) times out; the driver function-resets and re-initialises the device, and the next
    copy arrives intact."""
    from vfioctl.drivers.igb import RCTL

    with vfioctl.open(igb, iommu_mode=mode) as s:
        drv = s.driver()
        src, dst = s.dma_alloc(4096), s.dma_alloc(4096)
        src.write(os.urandom(1024))
        drv.write32(RCTL, 0)
        res = drv.memcpy(src.iova, dst.iova, 1024, timeout=0.3)
        assert not res.completed and res.recovered
        assert dst.read(0, 1024) == bytes(1024)
        res = drv.memcpy(src.iova, dst.iova, 1024)
        assert res.completed and dst.read(0, 1024) == src.read(0, 1024)
        drv.send_msi()
        assert drv.irq.wait(0, timeout=IRQ_WAIT_S) == 1  # the re-armed MSI-X vector fires
    assert driver_of(igb) == "vfio-pci"


def test_driver_limits_and_lifetime(edu, mode):
    with vfioctl.open(edu, iommu_mode=mode) as s:
        drv = s.driver()
        assert s.driver() is drv and drv.name == "edu"
        with pytest.raises(UsageError, match="DMA mask"):
            drv.memcpy_start(1 << 28, 0x1000, 64)  # edu would mask it to IOVA 0
        with pytest.raises(UsageError, match="1..4096 bytes"):
            drv.memcpy_start(0x1000, 0x2000, 4097)
        src = s.dma_alloc(4096, limit=1 << 28)
        dst = s.dma_alloc(8192, limit=1 << 28)
        src.write(b"abc" * 1000)
        assert drv.memcpy(src.iova, dst.iova + 4096, 3000).completed
        assert dst.read(4096, 3000) == b"abc" * 1000 and dst.read(0, 4096) == bytes(4096)
        irq = drv.irq
    assert drv.irq is None and not irq.fds  # the session closed the driver and its interrupt


def test_selftest_without_a_driver_names_the_devices_that_have_one(ivshmem, mode):
    rc, out, err = run_cli("selftest", ivshmem, "--iommu-mode", mode)
    assert rc == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: "), err
    assert f"{ivshmem} ({IVSHMEM}) has no DMA driver" in err
    assert f"{find_pci(EDU)} (edu)" in err and f"{find_pci(IGB)} (igb)" in err
    assert "8086:10c9" in err and "1234:11e8" in err


def test_selftest_of_a_host_driven_device_says_no_driver_and_leaves_it(nvme, mode):
    """nvme on its host driver: the answer is that no driver here drives it (not first "bind it
    to vfio-pci", which would only lead to that answer); a mode that is no mode is the first
    error, as for every command; nvme stays on its driver."""
    rc, out, err = run_cli("selftest", nvme, "--iommu-mode", mode)
    assert (rc, out) == (2, ""), err
    assert f"{nvme} ({NVME}) has no DMA driver" in err and "vfio-pci" not in err, err
    rc, out, err = run_cli("selftest", nvme, "--iommu-mode", "type3")
    assert (rc, out) == (2, "") and "unknown IOMMU mode 'type3'" in err, err
    assert driver_of(nvme) == "nvme"
