"""Errors: every failure is a VfioctlError that keeps errno, the operation and the path.

``hint`` names the fix; the CLI prints ``error: <message>`` and, on the next line, the hint.
"""
from __future__ import annotations

import errno as _errno
import os


def errno_name(code: int | None) -> str:
    """``EINVAL`` for 22; ``OK`` for None or 0."""
    if not code:
        return "OK"
    return _errno.errorcode.get(code, f"E{code}")


class VfioctlError(Exception):
    """Base of every vfioctl error."""

    #: exit status of the CLI for this kind of error
    exit_code = 2

    def __init__(self, message: str, *, errno: int | None = None, op: str | None = None,
                 path: str | os.PathLike | None = None, hint: str | None = None,
                 fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.op = op
        self.path = os.fspath(path) if path is not None else None
        self.hint = hint
        #: a code naming the kind of fix (``width``, ``pread``, ``group``, ...), for front ends
        #: that phrase the fix in their own terms (the CLI names its flags); ``hint`` says it in
        #: the library's terms
        self.fix = fix

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "errno": errno_name(self.errno) if self.errno else None,
            "op": self.op,
            "path": self.path,
            "hint": self.hint,
        }


class KernelError(VfioctlError):
    """An ioctl or syscall on a VFIO/iommufd fd failed: ``errno`` says how."""

    exit_code = 1

    def __init__(self, op: str, err: int, path: str | None = None, hint: str | None = None):
        where = f" on {path}" if path else ""
        super().__init__(f"{op}{where} failed: {errno_name(err)} ({os.strerror(err)})",
                         errno=err, op=op, path=path, hint=hint)


class UsageError(VfioctlError):
    """The request itself is wrong (bad BDF, unknown region, bad width ...)."""


class VfTokenRefused(UsageError):
    """The kernel refused to open an SR-IOV device for its VF token (missing or wrong)."""


class EnvironmentProblem(VfioctlError):
    """The machine cannot do this: no /dev/iommu, no permission, device not on vfio-pci ..."""


def closed_error(path: str | None) -> EnvironmentProblem:
    """The use of an fd that vfioctl closed (its owner keeps -1 in its place)."""
    return EnvironmentProblem(f"{path} is closed", op="use", path=path, hint="open it again")


class DeviceNotFound(UsageError):
    pass


class NotBoundToVfio(EnvironmentProblem):
    pass


class RegionAccessError(UsageError):
    """Offset past the region, misaligned width, region not readable/writable/mappable."""


class BindingError(VfioctlError):
    """A bind/unbind step failed or was refused; the device was left on a driver."""


class Refused(BindingError):
    """A safety check refused the bind; nothing was changed."""
