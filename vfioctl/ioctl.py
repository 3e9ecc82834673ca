"""The one ioctl seam: every VFIO/iommufd ioctl of vfioctl goes through ``ioctl()``.

It fills ``argsz``/``size`` (the first field of every VFIO/iommufd argument struct), keeps the
errno and raises KernelError naming the operation and the path. Unit tests replace ``_sys_ioctl``
to fake the kernel for pure logic; every kernel behaviour is proven in the VM.
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


def ioctl(fd: int, request: int, arg=0, *, op: str, path: str | None = None) -> int:
    """Issue ``request`` on ``fd``; ``arg`` is a ctypes struct, a writable buffer or an int.

    A struct (or a bytearray starting with one) is updated in place with what the kernel wrote
    back. Returns the ioctl's return value; raises KernelError(op, errno, path) on failure.
    """
    _fill_size(arg)
    try:
        if isinstance(arg, int):
            return _sys_ioctl(fd, request, arg)
        return _sys_ioctl(fd, request, arg, True)
    except OSError as exc:
        raise KernelError(op, exc.errno, path) from None
