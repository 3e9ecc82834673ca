"""MSI-X raised by the device itself: e1000e routes interrupt causes to vectors through IVAR.

e1000e registers (BAR0): ICR 0xC0, ICS 0xC8 (set causes), IMS 0xD0 (unmask), IMC 0xD8,
IVAR 0xE4 (a 4-bit entry per cause: bit 3 valid, bits 0-2 vector; RXQ0, RXQ1, TXQ0, TXQ1, OTHER).
"""
from __future__ import annotations

import pytest
from vmhelpers import E1000E, driver_of, find_pci, sysfs_bind

import vfioctl

ICR, ICS, IMS, IMC, IVAR = 0xC0, 0xC8, 0xD0, 0xD8, 0xE4
CAUSES = [0x00100000, 0x00200000, 0x00400000, 0x00800000, 0x01000000]  # RXQ0 RXQ1 TXQ0 TXQ1 OTHER


@pytest.fixture
def e1000e():
    bdf = find_pci(E1000E)
    before = driver_of(bdf)
    sysfs_bind(bdf, "vfio-pci")
    yield bdf
    sysfs_bind(bdf, before)


def test_e1000e_raises_each_msix_vector(e1000e):
    with vfioctl.open(e1000e) as s:
        s.device.bus_master(True)
        bar0 = s.region("bar0")
        n = len(CAUSES)
        irq = s.device.enable_irq("msix", n)
        ivar = 0
        for vec in range(n):
            ivar |= (0x8 | vec) << (4 * vec)
        bar0.write(IVAR, ivar)
        bar0.write(IMS, sum(CAUSES))
        for vec, cause in enumerate(CAUSES):
            # routing: no vector has fired before its own cause is set
            assert all(irq.poll(v) == 0 for v in range(vec, n)), irq.events
            bar0.write(ICS, cause)
            assert irq.wait(vec, timeout=5) >= 1, f"vector {vec} did not fire"
            bar0.write(ICR, cause)  # clear the cause
        # Every vector was raised by its cause. (Once in three runs QEMU 7.2's e1000e delivered
        # an already-raised vector a second time; a repeat is tolerated, an early fire is not.)
        assert all(e >= 1 for e in irq.events), irq.events
        bar0.write(IMC, 0xFFFFFFFF)
