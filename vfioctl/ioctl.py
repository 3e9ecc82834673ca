"""The one ioctl seam: every VFIO/iommufd ioctl of vfioctl goes through here, in two forms, as
the kernel's selftest library pairs ``__fn`` (returns -errno) with ``fn`` (asserts):

- ``ioctl(fd, request, arg, op=..., path=...)`` raises KernelError naming the operation, the path
  and the errno; returns the ioctl's return value.
- ``try_ioctl(fd, request, arg)`` never raises for a kernel refusal: it returns the ioctl's return
  value (>= 0) or ``-errno``. ``fill=False`` sends the struct exactly as given (``probe`` sends
  bad ``argsz`` values on purpose).

Both fill ``argsz``/``size`` (the first field of every VFIO/iommufd argument struct) when it is 0.
``arg`` is a ctypes struct, a writable buffer (updated in place with what the kernel wrote back)
or an int. Unit tests replace ``_sys_ioctl`` to fake the kernel for pure logic; every kernel
behaviour is proven in the VM.
"""
from __future__ import annotations

import ctypes
import fcntl

from .errors import KernelError

#: the raw syscall; unit tests may replace it
_sys_ioctl = fcntl.ioctl


def _fill_size(arg) -> None:
    if isinstance(arg, ctypes.Structure):
        first = arg._fields_[0][0]
        if first in ("argsz", "size") and getattr(arg, first) == 0:
            setattr(arg, first, ctypes.sizeof(arg))


def _call(fd: int, request: int, arg) -> int:
    if isinstance(arg, int):
        return _sys_ioctl(fd, request, arg)
    return _sys_ioctl(fd, request, arg, True)


def try_ioctl(fd: int, request: int, arg=0, *, fill: bool = True) -> int:
    """Issue ``request``; its return value, or ``-errno`` if the kernel refused it."""
    if fill:
        _fill_size(arg)
    try:
        return _call(fd, request, arg)
    except OSError as exc:
        return -exc.errno


def ioctl(fd: int, request: int, arg=0, *, op: str, path: str | None = None) -> int:
    """Issue ``request``; its return value, or KernelError(op, errno, path)."""
    _fill_size(arg)
    try:
        return _call(fd, request, arg)
    except OSError as exc:
        raise KernelError(op, exc.errno, path) from None
