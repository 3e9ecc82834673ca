"""ctypes mirror of Linux 6.12 ``include/uapi/linux/iommufd.h``, with the kernel's names."""
# ruff: noqa: N801
from __future__ import annotations

from ._base import Struct, u8, u16, u32, u64, vfio_io

IOMMUFD_TYPE = ord(";")

IOMMUFD_CMD_BASE = 0x80
IOMMUFD_CMD_DESTROY = IOMMUFD_CMD_BASE
IOMMUFD_CMD_IOAS_ALLOC = 0x81
IOMMUFD_CMD_IOAS_ALLOW_IOVAS = 0x82
IOMMUFD_CMD_IOAS_COPY = 0x83
IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84
IOMMUFD_CMD_IOAS_MAP = 0x85
IOMMUFD_CMD_IOAS_UNMAP = 0x86
IOMMUFD_CMD_OPTION = 0x87
IOMMUFD_CMD_VFIO_IOAS = 0x88
IOMMUFD_CMD_HWPT_ALLOC = 0x89
IOMMUFD_CMD_GET_HW_INFO = 0x8A
IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING = 0x8B
IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP = 0x8C
IOMMUFD_CMD_HWPT_INVALIDATE = 0x8D
IOMMUFD_CMD_FAULT_QUEUE_ALLOC = 0x8E


class iommu_destroy(Struct):
    _fields_ = [("size", u32), ("id", u32)]


IOMMU_DESTROY = vfio_io(IOMMUFD_CMD_DESTROY)


class iommu_ioas_alloc(Struct):
    _fields_ = [("size", u32), ("flags", u32), ("out_ioas_id", u32)]


IOMMU_IOAS_ALLOC = vfio_io(IOMMUFD_CMD_IOAS_ALLOC)


class iommu_iova_range(Struct):
    _fields_ = [("start", u64), ("last", u64)]


class iommu_ioas_iova_ranges(Struct):
    _fields_ = [
        ("size", u32),
        ("ioas_id", u32),
        ("num_iovas", u32),
        ("__reserved", u32),
        ("allowed_iovas", u64),
        ("out_iova_alignment", u64),
    ]


IOMMU_IOAS_IOVA_RANGES = vfio_io(IOMMUFD_CMD_IOAS_IOVA_RANGES)


class iommu_ioas_allow_iovas(Struct):
    _fields_ = [
        ("size", u32),
        ("ioas_id", u32),
        ("num_iovas", u32),
        ("__reserved", u32),
        ("allowed_iovas", u64),
    ]


IOMMU_IOAS_ALLOW_IOVAS = vfio_io(IOMMUFD_CMD_IOAS_ALLOW_IOVAS)

IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0
IOMMU_IOAS_MAP_WRITEABLE = 1 << 1
IOMMU_IOAS_MAP_READABLE = 1 << 2


class iommu_ioas_map(Struct):
    _fields_ = [
        ("size", u32),
        ("flags", u32),
        ("ioas_id", u32),
        ("__reserved", u32),
        ("user_va", u64),
        ("length", u64),
        ("iova", u64),
    ]


IOMMU_IOAS_MAP = vfio_io(IOMMUFD_CMD_IOAS_MAP)


class iommu_ioas_copy(Struct):
    _fields_ = [
        ("size", u32),
        ("flags", u32),
        ("dst_ioas_id", u32),
        ("src_ioas_id", u32),
        ("length", u64),
        ("dst_iova", u64),
        ("src_iova", u64),
    ]


IOMMU_IOAS_COPY = vfio_io(IOMMUFD_CMD_IOAS_COPY)


class iommu_ioas_unmap(Struct):
    _fields_ = [("size", u32), ("ioas_id", u32), ("iova", u64), ("length", u64)]


IOMMU_IOAS_UNMAP = vfio_io(IOMMUFD_CMD_IOAS_UNMAP)

IOMMU_OPTION_RLIMIT_MODE = 0
IOMMU_OPTION_HUGE_PAGES = 1
IOMMU_OPTION_OP_SET = 0
IOMMU_OPTION_OP_GET = 1


class iommu_option(Struct):
    _fields_ = [
        ("size", u32),
        ("option_id", u32),
        ("op", u16),
        ("__reserved", u16),
        ("object_id", u32),
        ("val64", u64),
    ]


IOMMU_OPTION = vfio_io(IOMMUFD_CMD_OPTION)

IOMMU_VFIO_IOAS_GET = 0
IOMMU_VFIO_IOAS_SET = 1
IOMMU_VFIO_IOAS_CLEAR = 2


class iommu_vfio_ioas(Struct):
    _fields_ = [("size", u32), ("ioas_id", u32), ("op", u16), ("__reserved", u16)]


IOMMU_VFIO_IOAS = vfio_io(IOMMUFD_CMD_VFIO_IOAS)

IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0
IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1
IOMMU_HWPT_FAULT_ID_VALID = 1 << 2
IOMMU_VTD_S1_SRE = 1 << 0
IOMMU_VTD_S1_EAFE = 1 << 1
IOMMU_VTD_S1_WPE = 1 << 2


class iommu_hwpt_vtd_s1(Struct):
    _fields_ = [("flags", u64), ("pgtbl_addr", u64), ("addr_width", u32), ("__reserved", u32)]


IOMMU_HWPT_DATA_NONE = 0
IOMMU_HWPT_DATA_VTD_S1 = 1


class iommu_hwpt_alloc(Struct):
    _fields_ = [
        ("size", u32),
        ("flags", u32),
        ("dev_id", u32),
        ("pt_id", u32),
        ("out_hwpt_id", u32),
        ("__reserved", u32),
        ("data_type", u32),
        ("data_len", u32),
        ("data_uptr", u64),
        ("fault_id", u32),
        ("__reserved2", u32),
    ]


IOMMU_HWPT_ALLOC = vfio_io(IOMMUFD_CMD_HWPT_ALLOC)

IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1 << 0


class iommu_hw_info_vtd(Struct):
    _fields_ = [("flags", u32), ("__reserved", u32), ("cap_reg", u64), ("ecap_reg", u64)]


IOMMU_HW_INFO_TYPE_NONE = 0
IOMMU_HW_INFO_TYPE_INTEL_VTD = 1
IOMMU_HW_CAP_DIRTY_TRACKING = 1 << 0
IOMMU_HW_CAP_PCI_PASID_EXEC = 1 << 1
IOMMU_HW_CAP_PCI_PASID_PRIV = 1 << 2


class iommu_hw_info(Struct):
    _fields_ = [
        ("size", u32),
        ("flags", u32),
        ("dev_id", u32),
        ("data_len", u32),
        ("data_uptr", u64),
        ("out_data_type", u32),
        ("out_max_pasid_log2", u8),
        ("__reserved", u8 * 3),
        ("out_capabilities", u64),
    ]


IOMMU_GET_HW_INFO = vfio_io(IOMMUFD_CMD_GET_HW_INFO)

IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1


class iommu_hwpt_set_dirty_tracking(Struct):
    _fields_ = [("size", u32), ("flags", u32), ("hwpt_id", u32), ("__reserved", u32)]


IOMMU_HWPT_SET_DIRTY_TRACKING = vfio_io(IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING)

IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1


class iommu_hwpt_get_dirty_bitmap(Struct):
    _fields_ = [
        ("size", u32),
        ("hwpt_id", u32),
        ("flags", u32),
        ("__reserved", u32),
        ("iova", u64),
        ("length", u64),
        ("page_size", u64),
        ("data", u64),
    ]


IOMMU_HWPT_GET_DIRTY_BITMAP = vfio_io(IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP)

IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0
IOMMU_VTD_INV_FLAGS_LEAF = 1 << 0


class iommu_hwpt_vtd_s1_invalidate(Struct):
    _fields_ = [("addr", u64), ("npages", u64), ("flags", u32), ("__reserved", u32)]


class iommu_hwpt_invalidate(Struct):
    _fields_ = [
        ("size", u32),
        ("hwpt_id", u32),
        ("data_uptr", u64),
        ("data_type", u32),
        ("entry_len", u32),
        ("entry_num", u32),
        ("__reserved", u32),
    ]


IOMMU_HWPT_INVALIDATE = vfio_io(IOMMUFD_CMD_HWPT_INVALIDATE)

IOMMU_PGFAULT_FLAGS_PASID_VALID = 1 << 0
IOMMU_PGFAULT_FLAGS_LAST_PAGE = 1 << 1
IOMMU_PGFAULT_PERM_READ = 1 << 0
IOMMU_PGFAULT_PERM_WRITE = 1 << 1
IOMMU_PGFAULT_PERM_EXEC = 1 << 2
IOMMU_PGFAULT_PERM_PRIV = 1 << 3


class iommu_hwpt_pgfault(Struct):
    _fields_ = [
        ("flags", u32),
        ("dev_id", u32),
        ("pasid", u32),
        ("grpid", u32),
        ("perm", u32),
        ("__reserved", u32),
        ("addr", u64),
        ("length", u32),
        ("cookie", u32),
    ]


IOMMUFD_PAGE_RESP_SUCCESS = 0
IOMMUFD_PAGE_RESP_INVALID = 1


class iommu_hwpt_page_response(Struct):
    _fields_ = [("cookie", u32), ("code", u32)]


class iommu_fault_alloc(Struct):
    _fields_ = [("size", u32), ("flags", u32), ("out_fault_id", u32), ("out_fault_fd", u32)]


IOMMU_FAULT_QUEUE_ALLOC = vfio_io(IOMMUFD_CMD_FAULT_QUEUE_ALLOC)
