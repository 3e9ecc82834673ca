"""Intel 82576 (QEMU's ``igb``) PF as a memcpy engine: PHY internal loopback, one TX and one RX
queue; each copy is a frame read by the TX ring from the source and written by the RX ring to
the destination. The register sequence follows the 82576 datasheet as the kernel's VFIO
selftest driver (tools/testing/selftests/vfio/lib/drivers/igb) applies it, including
``RCTL.LBM_MAC``, which QEMU's model needs for loopback (it does not honour the PHY's loopback
bit) and which real 82576 hardware ignores.

Register offsets and bits are the kernel's (drivers/net/ethernet/intel/igb/e1000_regs.h,
e1000_defines.h, e1000_82575.h; include/uapi/linux/mii.h).

A TX read the IOMMU blocks: the kernel's driver expects real hardware to wedge the descriptor
engine (no write-back; it resets the function). QEMU's model (10.0) sends the frame anyway
with what the failed read returned (zeros) and reports it complete. Both are handled:
``memcpy_wait`` resets and re-initialises the device when no write-back comes.
"""
from __future__ import annotations

import struct
import time

from ..errors import EnvironmentProblem, UsageError
from .base import DmaDriver, MemcpyResult

CTRL, STATUS, EECD, MDIC, CTRL_EXT = 0x0, 0x8, 0x10, 0x20, 0x18
IMC, RCTL, TCTL, GCR = 0xD8, 0x100, 0x400, 0x5B00
EICS, EIMS, EIMC, EIAC, EIAM, GPIE, EICR, IVAR0 = (0x1520, 0x1524, 0x1528, 0x152C, 0x1530,
                                                   0x1514, 0x1580, 0x1700)
RDBAL, RDBAH, RDLEN, SRRCTL, RDH, RDT, RXDCTL = 0x2800, 0x2804, 0x2808, 0x280C, 0x2810, 0x2818, 0x2828
TDBAL, TDBAH, TDLEN, TDH, TDT, TXDCTL = 0x3800, 0x3804, 0x3808, 0x3810, 0x3818, 0x3828

CTRL_FD, CTRL_SLU, CTRL_SPD_SEL, CTRL_SPD_1000 = 0x1, 0x40, 0x300, 0x200
CTRL_FRCSPD, CTRL_FRCDPX, CTRL_RST = 0x800, 0x1000, 0x04000000
CTRL_EXT_DRV_LOAD, CTRL_EXT_LINK_MODE_MASK = 0x10000000, 0x00C00000
EECD_AUTO_RD = 0x200
MDIC_REG_SHIFT, MDIC_PHY_SHIFT = 16, 21
MDIC_OP_WRITE, MDIC_READY, MDIC_ERROR = 0x04000000, 0x10000000, 0x40000000
GCR_CMPL_TMOUT_RESEND = 0x10000
QUEUE_ENABLE = 0x02000000  # TXDCTL / RXDCTL
SRRCTL_DESCTYPE_ADV_ONEBUF = 0x02000000
RCTL_EN, RCTL_UPE, RCTL_MPE, RCTL_LBM_MAC, RCTL_BAM, RCTL_SECRC = (0x2, 0x8, 0x10, 0x40, 0x8000,
                                                                  0x04000000)
TCTL_EN, TCTL_PSP = 0x2, 0x8
GPIE_MSIX_MODE, GPIE_EIAME = 0x10, 0x40000000
IVAR_VALID = 0x80
ADVTXD_DTYP_DATA, ADVTXD_DCMD_EOP, ADVTXD_DCMD_IFCS, ADVTXD_DCMD_DEXT = (0x00300000, 0x01000000,
                                                                       0x02000000, 0x20000000)
ADVTXD_PAYLEN_SHIFT = 14
MII_BMCR = 0x0
BMCR_SPEED1000, BMCR_FULLDPLX, BMCR_ANRESTART, BMCR_ANENABLE, BMCR_LOOPBACK = (
    0x40, 0x100, 0x200, 0x1000, 0x4000)

VECTOR = 0
VECTOR_MASK = 1 << VECTOR
RING = 256            # descriptors per ring (16 bytes each): one page per ring
DESC = 16
RX_STATUS_DD = 0x1    # descriptor done, in the advanced write-back's status_error


class IgbDriver(DmaDriver):
    name = "igb"
    ids = ((0x8086, 0x10C9),)
    max_chunk = 1024       # one frame per copy; the kernel's driver uses the same
    min_chunk = 60         # the Ethernet minimum payload
    max_count = RING - 1
    dma_limit = None
    irq_index = "msix"

    def __init__(self, session):
        super().__init__(session)
        self.rings = None
        self.tx_tail = self.rx_tail = 0

    # --- registers ------------------------------------------------------------------------------
    def _write_phy(self, reg: int, value: int) -> None:
        self.write32(MDIC, value | reg << MDIC_REG_SHIFT | 1 << MDIC_PHY_SHIFT | MDIC_OP_WRITE)
        mdic = 0
        for _ in range(1000):
            time.sleep(0.00005)
            mdic = self.read32(MDIC)
            if mdic & MDIC_READY:
                break
        if not mdic & MDIC_READY or mdic & MDIC_ERROR:
            raise EnvironmentProblem(f"igb {self.session.pci.bdf}: PHY register {reg} write "
                                     f"failed (MDIC {mdic:#010x})",
                                     hint="the device may be hung: a reset (unbind and bind) "
                                          "may help")

    def _reset(self) -> None:
        self.write32(CTRL, self.read32(CTRL) | CTRL_RST)
        time.sleep(0.001)  # datasheet 4.2.1.6.1: at least 1 ms before checking
        for _ in range(20):
            if self.read32(EECD) & EECD_AUTO_RD:
                break
            time.sleep(0.001)
        else:  # QEMU's model never sets AUTO_RD; it clears CTRL.RST when done
            if self.read32(CTRL) & CTRL_RST:
                raise EnvironmentProblem(f"igb {self.session.pci.bdf}: reset did not complete "
                                         "(CTRL.RST still set)",
                                         hint="unbind and bind the device to reset it")
        self.write32(IMC, 0xFFFFFFFF)

    def _loopback(self) -> None:
        # QEMU raises STATUS.LU only from its autonegotiation timer; without link up its RX
        # path drops every frame. On real hardware the next write cancels this.
        try:
            self._write_phy(MII_BMCR, BMCR_ANENABLE | BMCR_ANRESTART)
        except EnvironmentProblem:
            pass
        self._write_phy(MII_BMCR, BMCR_LOOPBACK | BMCR_SPEED1000 | BMCR_FULLDPLX)
        time.sleep(0.05)
        ctrl = self.read32(CTRL) & ~CTRL_SPD_SEL
        self.write32(CTRL, ctrl | CTRL_FRCSPD | CTRL_FRCDPX | CTRL_SPD_1000 | CTRL_FD | CTRL_SLU)
        time.sleep(0.5)  # the kernel's ethtool loopback test settles as long

    def _hw_init(self) -> None:
        tx, rx = self.rings.iova, self.rings.iova + RING * DESC
        self.write32(CTRL_EXT, (self.read32(CTRL_EXT) | CTRL_EXT_DRV_LOAD)
                     & ~CTRL_EXT_LINK_MODE_MASK)
        self.enable_memory_and_master()
        self._loopback()
        # no endless re-send of a DMA read that timed out (the unmapped-IOVA copies)
        self.write32(GCR, self.read32(GCR) & ~GCR_CMPL_TMOUT_RESEND)
        for base, addr in ((TDBAL, tx), (RDBAL, rx)):
            self.write32(base, addr & 0xFFFFFFFF)
            self.write32(base + 4, addr >> 32)
            self.write32(base + 8, RING * DESC)
            self.write32(base + 0x10, 0)
            self.write32(base + 0x18, 0)
        self.write32(TXDCTL, QUEUE_ENABLE)
        self.write32(SRRCTL, SRRCTL_DESCTYPE_ADV_ONEBUF)
        self.write32(RXDCTL, QUEUE_ENABLE)
        self.write32(RCTL, RCTL_EN | RCTL_UPE | RCTL_MPE | RCTL_BAM | RCTL_LBM_MAC | RCTL_SECRC)
        self.write32(TCTL, TCTL_EN | TCTL_PSP)
        deadline = time.monotonic() + 1.0
        while not (self.read32(TXDCTL) & QUEUE_ENABLE and self.read32(RXDCTL) & QUEUE_ENABLE):
            if time.monotonic() > deadline:
                raise EnvironmentProblem(f"igb {self.session.pci.bdf}: the queues did not "
                                         "enable", hint="unbind and bind the device to reset it")
            time.sleep(0.0001)
        self.write32(GPIE, GPIE_MSIX_MODE | GPIE_EIAME)
        self.write32(EIAC, VECTOR_MASK)
        self.write32(EIAM, VECTOR_MASK)
        self.write32(IVAR0, IVAR_VALID)  # RX queue 0's cause → vector 0
        self.write32(EIMS, VECTOR_MASK)
        self.tx_tail = self.rx_tail = 0

    # --- the interface --------------------------------------------------------------------------
    def init(self) -> None:
        if self.rings is None:
            self.rings = self.session.dma_alloc(2 * RING * DESC)
        self._reset()
        if self.irq is None:
            self.irq = self.device.enable_irq("msix", 1)
        self._hw_init()
        self.initialized = True

    def remove(self) -> None:
        self.write32(RCTL, 0)
        self.write32(TCTL, 0)
        self._reset()

    def close(self) -> None:
        try:
            super().close()
        finally:
            rings, self.rings = self.rings, None
            if rings is not None and self.session.backend is not None:
                self.session.dma_free(rings)

    def memcpy_start(self, src: int, dst: int, size: int, count: int = 1) -> None:
        self.check_copy(src, dst, size, count)
        mem = self.rings.mem
        self.write32(EIMC, VECTOR_MASK)  # no completion interrupt
        rx_base = RING * DESC
        for _ in range(count):
            struct.pack_into("<QII", mem, self.tx_tail * DESC, src,
                             size | ADVTXD_DTYP_DATA | ADVTXD_DCMD_DEXT | ADVTXD_DCMD_IFCS
                             | ADVTXD_DCMD_EOP, size << ADVTXD_PAYLEN_SHIFT)
            struct.pack_into("<QQ", mem, rx_base + self.rx_tail * DESC, dst, 0)
            self.tx_tail = (self.tx_tail + 1) % RING
            self.rx_tail = (self.rx_tail + 1) % RING
        self.write32(RDT, self.rx_tail)
        self.write32(TDT, self.tx_tail)

    def memcpy_wait(self, timeout: float = 1.0) -> MemcpyResult:
        """Waits for the last RX descriptor's write-back. Without it in ``timeout`` (the source
        was unreadable, say), the device is function-reset (FLR) and re-initialised, as the
        kernel's driver does: a read fault can leave the descriptor engine wedged."""
        t0 = time.monotonic()
        last = RING * DESC + ((self.rx_tail - 1) % RING) * DESC
        deadline = t0 + timeout
        done = False
        while True:
            status = struct.unpack_from("<I", self.rings.mem, last + 8)[0]
            if status & RX_STATUS_DD:
                done = True
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.0002)
        self.write32(EICR, 0xFFFFFFFF)
        self.write32(EIMS, VECTOR_MASK)
        if done:
            return MemcpyResult(True, False, time.monotonic() - t0)
        self._recover()
        return MemcpyResult(False, True, time.monotonic() - t0)

    def _recover(self) -> None:
        self.device.reset()
        self.irq.rearm()  # the reset tore down the kernel side of the MSI-X trigger
        self._hw_init()

    def send_msi(self) -> None:
        # EIAM auto-masks the vector when it fires: unmask it, then set its cause
        self.write32(EIMS, VECTOR_MASK)
        self.write32(EICS, VECTOR_MASK)

    def check_copy(self, src: int, dst: int, size: int, count: int) -> None:
        if self.rings is None:
            raise UsageError("the igb driver is not initialised", hint="call init() first")
        super().check_copy(src, dst, size, count)
