"""Interrupts: an IRQ index's vectors wired to eventfds (VFIO_DEVICE_SET_IRQS)."""
from __future__ import annotations

import os
import select
import struct
import time

from typing import TYPE_CHECKING

from . import uapi
from .errors import EnvironmentProblem, UsageError

if TYPE_CHECKING:
    from .device import Device

IRQ_NAMES = ("intx", "msi", "msix", "err", "req")
INTX, MSI, MSIX, ERR, REQ = range(5)


def irq_index(name: str | int) -> int:
    if isinstance(name, int):
        if not 0 <= name <= 0xFFFFFFFF:
            raise UsageError(f"IRQ index {name:#x} is out of range",
                             hint="use intx, msi, msix, err, req or an index 0..4")
        return name
    key = name.strip().lower()
    if key in IRQ_NAMES:
        return IRQ_NAMES.index(key)
    raise UsageError(f"unknown IRQ index {name!r}", hint="use intx, msi, msix, err or req")


class IrqSet:
    """``count`` vectors of one IRQ index, each signalling its own eventfd.

    Events are counted per vector. INTx is automasked by the kernel on each event: call
    ``unmask()`` once the device's interrupt is acknowledged.
    """

    def __init__(self, device: Device, index: int | str, count: int = 1):
        self.device = device
        self.index = irq_index(index)
        info = device.irq_info(self.index)
        if count < 1 or count > info.count:
            raise UsageError(f"{info.name} has {info.count} vector(s); asked for {count}",
                             hint=f"ask for 1..{info.count} vectors")
        self.info = info
        self.count = count
        self.events = [0] * count
        self.fds: list[int] = []
        try:  # one by one: if the n-th fails (EMFILE), the ones before it are closed
            for _ in range(count):
                self.fds.append(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
        except OSError as exc:
            self._close_fds()
            raise EnvironmentProblem(f"cannot create {count} eventfds for {info.name}: "
                                     f"{os.strerror(exc.errno)}", errno=exc.errno,
                                     op="eventfd",
                                     hint="raise the open-files limit (ulimit -n) or ask for "
                                          "fewer vectors") from None
        self.enabled = False
        try:
            self._arm()
        except BaseException:
            self._close_fds()
            raise
        device._irqs.append(self)

    @property
    def name(self) -> str:
        return self.info.name

    def _set(self, flags: int, start: int, count: int, data: bytes = b"") -> None:
        self.device.set_irqs(self.index, flags, start, count, data)

    def _vector(self, vector: int) -> int:
        if not 0 <= vector < self.count:
            raise UsageError(f"vector {vector} is not one of 0..{self.count - 1}",
                             hint="use a vector this IrqSet enabled")
        return vector

    # --- actions --------------------------------------------------------------------------------
    def _action(self, action: int, vector: int) -> None:
        self._set(uapi.VFIO_IRQ_SET_DATA_NONE | action, self._vector(vector), 1)

    def trigger(self, vector: int = 0) -> None:
        """Signal the vector's eventfd from the kernel side (a loopback test of the wiring)."""
        self._action(uapi.VFIO_IRQ_SET_ACTION_TRIGGER, vector)

    def mask(self, vector: int = 0) -> None:
        self._action(uapi.VFIO_IRQ_SET_ACTION_MASK, vector)

    def unmask(self, vector: int = 0) -> None:
        self._action(uapi.VFIO_IRQ_SET_ACTION_UNMASK, vector)

    # --- events ---------------------------------------------------------------------------------
    def poll(self, vector: int = 0) -> int:
        """Events that arrived on the vector since the last poll/wait (0 if none)."""
        try:
            n = struct.unpack("=Q", os.read(self.fds[self._vector(vector)], 8))[0]
        except BlockingIOError:
            return 0
        self.events[vector] += n
        return n

    def wait(self, vector: int = 0, timeout: float = 5.0) -> int:
        """Block up to ``timeout`` seconds for events on the vector; their number, 0 on timeout."""
        fd = self.fds[self._vector(vector)]
        p = select.poll()
        p.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return 0
            if p.poll(int(left * 1000) + 1):
                n = self.poll(vector)
                if n:
                    return n

    # --- lifetime -------------------------------------------------------------------------------
    def _arm(self) -> None:
        """Wire every vector to its eventfd (ACTION_TRIGGER with DATA_EVENTFD)."""
        data = struct.pack(f"={self.count}i", *self.fds)
        self._set(uapi.VFIO_IRQ_SET_DATA_EVENTFD | uapi.VFIO_IRQ_SET_ACTION_TRIGGER, 0,
                  self.count, data)
        self.enabled = True

    def rearm(self) -> None:
        """Wire the same eventfds again: a device reset (VFIO_DEVICE_RESET) tears down the
        kernel side of MSI/MSI-X, while the eventfds here stay valid for their readers."""
        if self.enabled:
            self.disable()
        self._arm()

    def disable(self) -> None:
        if self.enabled and not self.device.closed:
            self.enabled = False
            self._set(uapi.VFIO_IRQ_SET_DATA_NONE | uapi.VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0)

    def _close_fds(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def close(self) -> None:
        try:
            self.disable()
        finally:
            if self.fds:
                self._close_fds()
            if self in self.device._irqs:
                self.device._irqs.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<IrqSet {self.name} x{self.count} events={self.events}>"


__all__ = ["IrqSet", "irq_index", "INTX", "MSI", "MSIX", "ERR", "REQ"]
