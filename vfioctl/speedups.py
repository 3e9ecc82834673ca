"""The optional compiled hot paths (``vfioctl/_speedups.c``): ``compiled`` is the extension
module, or None where the install had no compiler or no Python headers. The classes that use it
(``device.Region``, ``iova.PreparedMapping``, ``iova.DmaSpace``) run the same paths in pure
Python without it."""
try:
    from . import _speedups as compiled
except ImportError:
    compiled = None

__all__ = ["compiled"]
