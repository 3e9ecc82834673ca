"""Base for the objects that own a file descriptor: context manager, ``close()`` safe twice."""
from __future__ import annotations

import errno as _errno
import os

from .errors import EnvironmentProblem, KernelError, closed_error


def permission_hint(path: str) -> str:
    """What to do about EACCES on a VFIO or iommufd node: which group owns it, whether the
    caller is in it."""
    try:
        import grp

        st = os.stat(path)
        group = grp.getgrgid(st.st_gid).gr_name
    except (OSError, KeyError, ImportError):
        return ("run as root, or give your user read/write access to the node (vfioctl "
                "ships udev rules for a group)")
    if st.st_gid == 0 or not st.st_mode & 0o060:
        return ("run as root, or install vfioctl's udev rules, which give a group read/write "
                "access to the VFIO and iommufd nodes")
    if st.st_gid in os.getgroups():
        return f"{path} is group {group}'s; log in again so that your membership takes effect"
    return (f"{path} belongs to group {group}: add your user to it (usermod -aG {group} USER) "
            "and log in again, or run as root")


def open_node(path: str, what: str, missing_hint: str) -> int:
    """open(path, O_RDWR|O_CLOEXEC) with the errors a user can act on."""
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise EnvironmentProblem(f"{path} does not exist", errno=_errno.ENOENT, op="open",
                                 path=path, hint=missing_hint) from None
    except PermissionError as exc:
        raise EnvironmentProblem(
            f"permission denied opening {what} {path}", errno=exc.errno, op="open", path=path,
            hint=permission_hint(path), fix="permissions") from None
    except OSError as exc:
        raise KernelError("open", exc.errno, path) from None


class FdOwner:
    """Owns ``fd``; closes it once. Subclasses override ``_teardown`` for what goes first."""

    path: str
    #: -1: closed, or never opened (an owner whose __init__ failed before it had an fd, which
    #: __del__ still sees)
    _fd = -1

    def __init__(self, fd: int, path: str):
        self._fd = fd
        self.path = path

    @property
    def fd(self) -> int:
        """The fd; the "closed" error once closed. (vfioctl's own ioctls pass ``_fd`` to the
        seam, which turns fcntl's refusal of -1 into the same error.)"""
        if self._fd < 0:
            raise closed_error(self.path)
        return self._fd

    def fileno(self) -> int:
        return self.fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def _teardown(self) -> None:
        """Release what depends on the fd, in reverse order of creation."""

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self._teardown()
        finally:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if self._fd < 0:  # closed (the usual case): no call into close()
            return
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"<{type(self).__name__} {self.path} {state}>"
