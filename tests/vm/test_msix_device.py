"""MSI-X raised by the device itself: e1000e routes interrupt causes to vectors through IVAR.

e1000e registers (BAR0): ICR 0xC0, ICS 0xC8 (set causes), IMS 0xD0 (unmask), IMC 0xD8,
IVAR 0xE4 (a 4-bit entry per cause: bit 3 valid, bits 0-2 vector; RXQ0, RXQ1, TXQ0, TXQ1, OTHER).
Only the four queue causes are unmasked: with no network backend, only ICS sets them. OTHER
carries link-status changes, which the device raises on its own schedule (seen firing vector 4
as soon as it was unmasked), so it stays masked.
Throttling is switched off first (ITR, EITR[0..4] = 0, as the host e1000e driver left them set):
with it on, QEMU 7.2 delays deliveries with a timer, and a timer that fires after MSI-X is
disabled trips an assertion in e1000e_intrmgr_on_msix_throttling_timer and aborts the VM.
"""
from __future__ import annotations

import pytest
from vmhelpers import E1000E, driver_of, find_pci, sysfs_bind

import vfioctl

ICR, ICS, IMS, IMC, IVAR = 0xC0, 0xC8, 0xD0, 0xD8, 0xE4
ITR, EITR0 = 0xC4, 0xE8  # interrupt throttling; EITR[n] at 0xE8 + 4n
CAUSES = [0x00100000, 0x00200000, 0x00400000, 0x00800000]  # RXQ0 RXQ1 TXQ0 TXQ1


@pytest.fixture
def e1000e():
    bdf = find_pci(E1000E)
    before = driver_of(bdf)
    sysfs_bind(bdf, "vfio-pci")
    yield bdf
    sysfs_bind(bdf, before)


def test_e1000e_raises_each_msix_vector(e1000e):
    # One round per boot: moving e1000e back to its host driver and straight out again (as a
    # repeated test would) tripped the same QEMU 7.2 throttling-timer assertion.
    with vfioctl.open(e1000e) as s:
        s.device.bus_master(True)
        bar0 = s.region("bar0")
        n = len(CAUSES)
        irq = s.device.enable_irq("msix", n)
        ivar = 0
        for vec in range(n):
            ivar |= (0x8 | vec) << (4 * vec)
        bar0.write(IMC, 0xFFFFFFFF)  # mask everything, then drop stale causes
        bar0.write(ITR, 0)
        for v in range(5):
            bar0.write(EITR0 + 4 * v, 0)
        bar0.write(ICR, 0xFFFFFFFF)
        bar0.read(ICR)
        bar0.write(IVAR, ivar)
        bar0.write(IMS, sum(CAUSES))
        for vec, cause in enumerate(CAUSES):
            # routing: no vector has fired before its own cause is set
            assert all(irq.poll(v) == 0 for v in range(vec, n)), irq.events
            bar0.write(ICS, cause)
            assert irq.wait(vec, timeout=5) >= 1, f"vector {vec} did not fire"
            bar0.write(ICR, cause)  # clear the cause
        # Every vector was raised by its own cause. QEMU 7.2's e1000e also delivers vector 1
        # (RXQ1) once more during the later steps (seen every run: [1, 2, 1, 1]); unexplained,
        # so a repeat is tolerated, while an early fire (wrong routing) is not.
        irq.poll(1)
        assert all(e >= 1 for e in irq.events), irq.events
        bar0.write(IMC, 0xFFFFFFFF)
