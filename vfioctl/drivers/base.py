"""The driver interface and what every driver shares."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..device import PCI_COMMAND, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY
from ..errors import UsageError



@dataclass(frozen=True)
class MemcpyResult:
    """What a memcpy came to: ``completed`` if the device reported every copy done within the
    time allowed; otherwise the device was reset and re-initialised (``recovered``) and is ready
    for the next one."""

    completed: bool
    recovered: bool = False
    seconds: float = 0.0


class DmaDriver:
    """A device that copies memory by DMA and raises an interrupt on request.

    Class attributes describe the device: ``ids`` (vendor, device) pairs, ``max_chunk`` (bytes
    per copy), ``min_chunk``, ``max_count`` (copies per start), ``dma_limit`` (the device's DMA
    mask as an exclusive IOVA bound, or None), ``irq_index`` (the index ``send_msi`` fires).

    The driver uses the session's device and DMA space; ``close()`` (also on session close)
    quiets the device and releases the interrupt and any DMA memory it took.
    """

    name = "?"
    ids: tuple[tuple[int, int], ...] = ()
    max_chunk = 4096
    min_chunk = 1
    max_count = 1
    dma_limit: int | None = None
    irq_index = "msi"

    def __init__(self, session):
        self.session = session
        self.device = session.device
        self.irq = None
        self._bar0 = None
        self.initialized = False

    # --- the interface ------------------------------------------------------------------------
    def init(self) -> None:
        """Reset the device, wire its interrupt to an eventfd and program it."""
        raise NotImplementedError

    def remove(self) -> None:
        """Stop the device's DMA and interrupts; ``init()`` may follow."""
        raise NotImplementedError

    def memcpy_start(self, src: int, dst: int, size: int, count: int = 1) -> None:
        raise NotImplementedError

    def memcpy_wait(self, timeout: float = 1.0) -> MemcpyResult:
        raise NotImplementedError

    def send_msi(self) -> None:
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------------
    @property
    def bar0(self):
        """BAR0, mmapped where vfio-pci allows it (else read/write through the region)."""
        if self._bar0 is None:
            region = self.device.region("bar0")
            self._bar0 = region.mmap() if region.info.mappable else region
        return self._bar0

    def read32(self, offset: int) -> int:
        return self.bar0.read(offset, 4)

    def write32(self, offset: int, value: int) -> None:
        self.bar0.write(offset, value, 4)

    def enable_memory_and_master(self) -> None:
        cfg = self.device.config
        cmd = cfg.read(PCI_COMMAND, 2)
        want = cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
        if want != cmd:
            cfg.write(PCI_COMMAND, want, 2)

    def check_copy(self, src: int, dst: int, size: int, count: int) -> None:
        if not self.min_chunk <= size <= self.max_chunk:
            raise UsageError(f"{self.name} copies {self.min_chunk}..{self.max_chunk} bytes at a "
                             f"time; asked for {size}",
                             hint="split the copy (memcpy() does) or pad it to the minimum")
        if not 1 <= count <= self.max_count:
            raise UsageError(f"{self.name} takes 1..{self.max_count} copies per start; asked "
                             f"for {count}", hint="start fewer copies at a time")
        if self.dma_limit is not None:
            for what, iova in (("source", src), ("destination", dst)):
                if iova < 0 or iova + size > self.dma_limit:
                    raise UsageError(
                        f"{self.name} reaches IOVAs below {self.dma_limit:#x} (its DMA mask); "
                        f"the {what} {iova:#x}+{size:#x} is beyond it",
                        hint=f"map its buffers with limit={self.dma_limit:#x}")

    def memcpy(self, src: int, dst: int, size: int, timeout: float = 1.0) -> MemcpyResult:
        """Copy ``size`` bytes in chunks of at most ``max_chunk``; stops at the first chunk that
        does not complete (the device is recovered by then)."""
        t0 = time.monotonic()
        done = 0
        while done < size:
            n = min(self.max_chunk, size - done)
            if n < self.min_chunk:  # a short tail: copy the last min_chunk bytes again
                done, n = size - self.min_chunk, self.min_chunk
            self.memcpy_start(src + done, dst + done, n, 1)
            res = self.memcpy_wait(timeout)
            if not res.completed:
                return MemcpyResult(False, res.recovered, time.monotonic() - t0)
            done += n
        return MemcpyResult(True, False, time.monotonic() - t0)

    def close(self) -> None:
        """``remove()`` then release the interrupt and the BAR mapping; safe twice."""
        try:
            if self.initialized and not self.device.closed:
                self.remove()
        finally:
            self.initialized = False
            irq, self.irq = self.irq, None
            if irq is not None:
                irq.close()
            bar, self._bar0 = self._bar0, None
            if bar is not None:
                bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.session.pci.bdf}>"
