"""Helpers shared by the UAPI modules: struct registration and ioctl number encoding.

Nothing here touches the system; importing only builds ctypes classes and integers.
"""
from __future__ import annotations

import ctypes

from ioctl_opt import IO

__all__ = ["Struct", "Union", "u8", "u16", "u32", "s32", "u64", "flex", "vfio_io", "STRUCTS"]

u8 = ctypes.c_uint8
u16 = ctypes.c_uint16
u32 = ctypes.c_uint32
s32 = ctypes.c_int32
u64 = ctypes.c_uint64  # __aligned_u64 and __u64 are both 8-aligned on the 64-bit ABIs we target

#: every C struct defined by the UAPI modules, by its C name (``vfio_device_info``)
STRUCTS: dict[str, type[ctypes.Structure]] = {}

VFIO_TYPE = ord(";")
VFIO_BASE = 100


def vfio_io(nr: int) -> int:
    """``_IO(';', nr)``: VFIO and iommufd ioctls encode neither direction nor size."""
    return IO(VFIO_TYPE, nr)


def flex(ctype: type) -> type:
    """A C flexible array member (``__u8 data[]``): zero elements, the element's alignment."""
    return ctype * 0


class _Registered:
    """Mixin: a struct whose class name is its C name is recorded in STRUCTS."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_fields_" in cls.__dict__ and not cls.__name__.startswith("_"):
            STRUCTS[cls.__name__] = cls


class Struct(ctypes.Structure, _Registered):
    pass


class Union(ctypes.Union):
    pass
