"""Describe the UAPI layout as text lines, from Python or from the C headers.

The same lines come from two sources:
- ``python_lines()``: the ctypes definitions of this package;
- ``c_program()``: a C program that, compiled against the kernel's exported UAPI headers and run,
  prints them from ``sizeof``/``offsetof`` and the header's own constants.
``tests/golden/uapi-layout.txt`` holds the C output; tests compare both sides with it.
"""
from __future__ import annotations

import ctypes
from collections.abc import Iterator

from . import iommufd, vfio
from ._base import STRUCTS

_PREFIXES = ("VFIO_", "IOMMU_", "IOMMUFD_")


def constants() -> dict[str, int]:
    """Every public integer constant of the UAPI modules, by its C name."""
    out: dict[str, int] = {}
    for mod in (vfio, iommufd):
        for name, value in vars(mod).items():
            if name.startswith(_PREFIXES) and isinstance(value, int):
                out[name] = value
    return dict(sorted(out.items()))


def _fields(cls: type, base: int = 0) -> Iterator[tuple[str, int, int]]:
    """(name, offset, size) of each named field, anonymous unions flattened as C sees them."""
    anonymous = set(getattr(cls, "_anonymous_", ()))
    for name, ctype in cls._fields_:
        desc = getattr(cls, name)
        if name in anonymous:
            yield from _fields(ctype, base + desc.offset)
        else:
            yield name, base + desc.offset, desc.size


def _bits(value: int) -> int:
    """A constant as the unsigned bit pattern of its C type: 32 bits when it fits, else 64.

    C's ``(1 << 31)`` is a negative int and ``-1`` an int; both are compared as the 32-bit
    patterns the kernel's __u32 fields carry.
    """
    width = 32 if -(1 << 31) <= value < (1 << 32) else 64
    return value & ((1 << width) - 1)


def python_lines() -> list[str]:
    lines = []
    for cname in sorted(STRUCTS):
        cls = STRUCTS[cname]
        lines.append(f"struct {cname} size {ctypes.sizeof(cls)}")
        for name, offset, size in _fields(cls):
            lines.append(f"struct {cname}.{name} offset {offset} size {size}")
    for name, value in constants().items():
        lines.append(f"const {name} {_bits(value)}")
    return lines


def c_program() -> str:
    """C source printing the same lines as python_lines(), from the real headers."""
    out = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <linux/vfio.h>",
        "#include <linux/iommufd.h>",
        "#define FIELD(s, f) printf(\"struct \" #s \".\" #f \" offset %zu size %zu\\n\", "
        "offsetof(struct s, f), sizeof(((struct s *)0)->f))",
        "#define FLEX(s, f) printf(\"struct \" #s \".\" #f \" offset %zu size 0\\n\", "
        "offsetof(struct s, f))",
        "int main(void) {",
    ]
    for cname in sorted(STRUCTS):
        cls = STRUCTS[cname]
        out.append(f'  printf("struct {cname} size %zu\\n", sizeof(struct {cname}));')
        for name, _offset, size in _fields(cls):
            # a flexible array member (size 0 here) has no sizeof in C
            out.append(f"  {'FLEX' if size == 0 else 'FIELD'}({cname}, {name});")
    for name in constants():
        out.append(
            f'  printf("const {name} %llu\\n", sizeof({name}) <= 4 ? '
            f"(unsigned long long)(unsigned)({name}) : (unsigned long long)({name}));"
        )
    out += ["  return 0;", "}", ""]
    return "\n".join(out)
