"""Kernel ABI: ctypes structs, constants and ioctl numbers of vfio.h and iommufd.h (Linux 6.12).

Importing runs nothing but class and integer definitions.
"""
from . import iommufd, vfio
from ._base import STRUCTS
from .iommufd import *  # noqa: F401,F403
from .vfio import *  # noqa: F401,F403

__all__ = ["STRUCTS", "vfio", "iommufd"]
