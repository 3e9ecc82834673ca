"""QEMU's ``edu`` teaching device (hw/misc/edu.c): a DMA engine between RAM and a 4 KiB buffer
inside the device, and an interrupt raised by a register write.

A memcpy is two DMAs through that buffer: source → buffer, buffer → destination. The engine
runs one DMA at a time, 100 ms (virtual clock) after it is started, and reaches only the low
28 bits of the bus address (edu's ``dma_mask``: it masks higher bits away, so a driver must
refuse them rather than let the copy land elsewhere). It reports no errors: when the IOMMU
blocks its read, the device buffer holds what the failed read returned (zeros, in QEMU), and
the second DMA copies that on.
"""
from __future__ import annotations

import time

from ..errors import UsageError
from .base import DmaDriver, MemcpyResult

DMA_SRC, DMA_DST, DMA_CNT, DMA_CMD = 0x80, 0x88, 0x90, 0x98
DMA_START, DMA_TO_RAM, DMA_IRQ = 0x1, 0x2, 0x4
IRQ_STATUS, IRQ_RAISE, IRQ_ACK = 0x24, 0x60, 0x64
EDU_BUFFER = 0x40000
SEND_MSI_VALUE = 0x1


class EduDriver(DmaDriver):
    name = "edu"
    ids = ((0x1234, 0x11E8),)
    max_chunk = 4096
    min_chunk = 1
    max_count = 1
    dma_limit = 1 << 28
    irq_index = "msi"

    def init(self) -> None:
        self.enable_memory_and_master()
        if self.irq is None:
            self.irq = self.device.enable_irq("msi", 1)
        self.write32(IRQ_ACK, 0xFFFFFFFF)
        self._pending: tuple[int, int] | None = None  # (dst, size) of the second DMA
        self.initialized = True

    def remove(self) -> None:
        self._wait_idle(1.0)
        self.write32(IRQ_ACK, 0xFFFFFFFF)
        self._pending = None

    def _dma(self, src: int, dst: int, size: int, to_ram: bool) -> None:
        bar = self.bar0
        bar.write(DMA_SRC, src, 8)
        bar.write(DMA_DST, dst, 8)
        bar.write(DMA_CNT, size, 8)
        bar.write(DMA_CMD, DMA_START | (DMA_TO_RAM if to_ram else 0), 8)

    def _wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.bar0.read(DMA_CMD, 8) & DMA_START:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def memcpy_start(self, src: int, dst: int, size: int, count: int = 1) -> None:
        self.check_copy(src, dst, size, count)
        self._dma(src, EDU_BUFFER, size, to_ram=False)
        self._pending = (dst, size)

    def memcpy_wait(self, timeout: float = 1.0) -> MemcpyResult:
        """Both DMAs take 100 ms of the guest's virtual clock each; ``timeout`` is per DMA."""
        if self._pending is None:
            raise UsageError("no edu memcpy is running", hint="call memcpy_start() first")
        t0 = time.monotonic()
        dst, size = self._pending
        self._pending = None
        if not self._wait_idle(timeout):
            return MemcpyResult(False, self._recover(timeout), time.monotonic() - t0)
        self._dma(EDU_BUFFER, dst, size, to_ram=True)
        if not self._wait_idle(timeout):
            return MemcpyResult(False, self._recover(timeout), time.monotonic() - t0)
        return MemcpyResult(True, False, time.monotonic() - t0)

    def _recover(self, timeout: float) -> bool:
        """edu has no reset (no FLR, nothing behind a bridge): wait for the engine to go idle
        and clear its interrupt status."""
        ok = self._wait_idle(4 * timeout)
        self.write32(IRQ_ACK, 0xFFFFFFFF)
        return ok

    def send_msi(self) -> None:
        """Raise edu's interrupt (MSI when enabled) and acknowledge it at once: each raise is
        one message."""
        self.write32(IRQ_RAISE, SEND_MSI_VALUE)
        self.write32(IRQ_ACK, SEND_MSI_VALUE)
