"""The one ioctl seam: every VFIO/iommufd ioctl of vfioctl goes through here, in two forms, as
the kernel's selftest library pairs ``__fn`` (returns -errno) with ``fn`` (asserts):

- ``ioctl(fd, request, arg, op=..., path=...)`` raises KernelError naming the operation, the path
  and the errno; returns the ioctl's return value. On fd -1, which an fd owner keeps once
  closed (fcntl refuses it with ValueError before any syscall), it raises the owner's "closed"
  error instead: the owners pass ``_fd`` and skip their ``fd`` property's call.
- ``try_ioctl(fd, request, arg)`` never raises for a kernel refusal: it returns the ioctl's return
  value (>= 0) or ``-errno``. ``fill=False`` sends the struct exactly as given (``probe`` sends
  bad ``argsz`` values on purpose).

Both fill ``argsz``/``size`` (the first field of every VFIO/iommufd argument struct) when it is 0.
``arg`` is a ctypes struct, a writable buffer (updated in place with what the kernel wrote back)
or an int. One exception, for speed (#14): where vfioctl was built with its optional extension,
a PreparedMapping's ``map``/``unmap`` and a DmaSpace's ``map``/``unmap`` at an explicit IOVA
issue their ioctls from C (``vfioctl/_speedups.c``), and hand a refusal's errno back to
Python, which raises the same KernelError as this seam would. Unit tests replace ``_sys_ioctl`` to fake the kernel for pure logic; every kernel
behaviour is proven in the VM.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl

from .errors import KernelError, closed_error

#: the raw syscall; unit tests may replace it
_sys_ioctl = fcntl.ioctl


#: per argument type: the name of its size field (argsz/size) or None, and its size; filled
#: on first use
_SIZE_FIELD: dict[type, tuple[str | None, int]] = {}


def _size_field(cls: type) -> tuple[str | None, int]:
    if issubclass(cls, ctypes.Structure):
        first = cls._fields_[0][0]
        entry = (first if first in ("argsz", "size") else None, ctypes.sizeof(cls))
    else:
        entry = (None, 0)
    _SIZE_FIELD[cls] = entry
    return entry


def _fill_size(arg) -> None:
    try:
        field, size = _SIZE_FIELD[type(arg)]
    except KeyError:
        field, size = _size_field(type(arg))
    if field is not None and not getattr(arg, field):
        setattr(arg, field, size)


def _refused(exc: ValueError, fd: int, path: str | None) -> Exception:
    """What the raising forms raise for fcntl's ValueError: on a negative fd (the -1 a closed
    owner keeps; fcntl refuses it before any syscall) the owner's "closed" error, else the
    ValueError itself."""
    return closed_error(path) if fd < 0 else exc


def try_ioctl(fd: int, request: int, arg=0, *, fill: bool = True) -> int:
    """Issue ``request``; its return value, or ``-errno`` if the kernel refused it."""
    try:
        if type(arg) is int:
            return _sys_ioctl(fd, request, arg)
        if fill:
            _fill_size(arg)
        return _sys_ioctl(fd, request, arg, True)
    except OSError as exc:
        return -exc.errno
    except ValueError:  # fcntl's refusal of a negative fd, as the kernel would refuse it
        if fd < 0:
            return -errno.EBADF
        raise


def ioctl(fd: int, request: int, arg=0, *, op: str, path: str | None = None) -> int:
    """Issue ``request``; its return value, or KernelError(op, errno, path)."""
    try:
        if type(arg) is int:
            return _sys_ioctl(fd, request, arg)
        _fill_size(arg)
        return _sys_ioctl(fd, request, arg, True)
    except OSError as exc:
        raise KernelError(op, exc.errno, path) from None
    except ValueError as exc:
        raise _refused(exc, fd, path) from None


def ioctl_filled(fd: int, request: int, arg, op: str, path: str | None) -> int:
    """``ioctl()`` for a struct whose size field the caller has filled, arguments by position:
    the hot path of DMA map and unmap, where the checks of ``ioctl()`` cost as much as the rest
    of the call."""
    try:
        return _sys_ioctl(fd, request, arg, True)
    except OSError as exc:
        raise KernelError(op, exc.errno, path) from None
    except ValueError as exc:
        raise _refused(exc, fd, path) from None
