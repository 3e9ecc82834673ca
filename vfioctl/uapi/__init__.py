"""Kernel ABI: ctypes structs, constants and ioctl numbers of vfio.h and iommufd.h.

The layout is Linux 7.3's (the newest kernel of the bed), proven against its exported headers
(tests/golden/uapi-layout.txt). Fields newer than 6.12 default to zero, which 6.12 accepts
(copy_struct_from_user allows a larger argsz whose extra bytes are zero).

Importing runs nothing but class and integer definitions.
"""
from . import iommufd, vfio
from ._base import STRUCTS
from .iommufd import *  # noqa: F401,F403
from .vfio import *  # noqa: F401,F403

__all__ = ["STRUCTS", "vfio", "iommufd"]
