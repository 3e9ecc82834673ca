"""ctypes mirror of Linux 6.12 ``include/uapi/linux/vfio.h``, with the kernel's names.

Every layout is checked against the C header by tests/unit/test_uapi_layout.py (golden file) and
tests/test_uapi_headers.py (a C program compiled against the exported headers).
"""
# ruff: noqa: N801  (C struct names)
from __future__ import annotations

from ._base import VFIO_BASE, VFIO_TYPE, Struct, Union, flex, s32, u8, u16, u32, u64, vfio_io

VFIO_API_VERSION = 0

# extensions (VFIO_CHECK_EXTENSION)
VFIO_TYPE1_IOMMU = 1
VFIO_SPAPR_TCE_IOMMU = 2
VFIO_TYPE1v2_IOMMU = 3
VFIO_DMA_CC_IOMMU = 4
VFIO_EEH = 5
VFIO_SPAPR_TCE_v2_IOMMU = 7
VFIO_NOIOMMU_IOMMU = 8
VFIO_UNMAP_ALL = 9
VFIO_UPDATE_VADDR = 10

VFIO_TYPE = VFIO_TYPE
VFIO_BASE = VFIO_BASE


class vfio_info_cap_header(Struct):
    _fields_ = [("id", u16), ("version", u16), ("next", u32)]


# --- container and group (legacy) ---------------------------------------------------------------
VFIO_GET_API_VERSION = vfio_io(VFIO_BASE + 0)
VFIO_CHECK_EXTENSION = vfio_io(VFIO_BASE + 1)
VFIO_SET_IOMMU = vfio_io(VFIO_BASE + 2)


class vfio_group_status(Struct):
    _fields_ = [("argsz", u32), ("flags", u32)]


VFIO_GROUP_FLAGS_VIABLE = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1
VFIO_GROUP_GET_STATUS = vfio_io(VFIO_BASE + 3)
VFIO_GROUP_SET_CONTAINER = vfio_io(VFIO_BASE + 4)
VFIO_GROUP_UNSET_CONTAINER = vfio_io(VFIO_BASE + 5)
VFIO_GROUP_GET_DEVICE_FD = vfio_io(VFIO_BASE + 6)


# --- device info --------------------------------------------------------------------------------
class vfio_device_info(Struct):
    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("num_regions", u32),
        ("num_irqs", u32),
        ("cap_offset", u32),
        ("pad", u32),
    ]


VFIO_DEVICE_FLAGS_RESET = 1 << 0
VFIO_DEVICE_FLAGS_PCI = 1 << 1
VFIO_DEVICE_FLAGS_PLATFORM = 1 << 2
VFIO_DEVICE_FLAGS_AMBA = 1 << 3
VFIO_DEVICE_FLAGS_CCW = 1 << 4
VFIO_DEVICE_FLAGS_AP = 1 << 5
VFIO_DEVICE_FLAGS_FSL_MC = 1 << 6
VFIO_DEVICE_FLAGS_CAPS = 1 << 7
VFIO_DEVICE_FLAGS_CDX = 1 << 8
VFIO_DEVICE_GET_INFO = vfio_io(VFIO_BASE + 7)

VFIO_DEVICE_INFO_CAP_ZPCI_BASE = 1
VFIO_DEVICE_INFO_CAP_ZPCI_GROUP = 2
VFIO_DEVICE_INFO_CAP_ZPCI_UTIL = 3
VFIO_DEVICE_INFO_CAP_ZPCI_PFIP = 4
VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP = 5


class vfio_device_info_cap_pci_atomic_comp(Struct):
    _fields_ = [("header", vfio_info_cap_header), ("flags", u32), ("reserved", u32)]


VFIO_PCI_ATOMIC_COMP32 = 1 << 0
VFIO_PCI_ATOMIC_COMP64 = 1 << 1
VFIO_PCI_ATOMIC_COMP128 = 1 << 2


# --- region info and its capabilities -------------------------------------------------------------
class vfio_region_info(Struct):
    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("index", u32),
        ("cap_offset", u32),
        ("size", u64),
        ("offset", u64),
    ]


VFIO_REGION_INFO_FLAG_READ = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP = 1 << 2
VFIO_REGION_INFO_FLAG_CAPS = 1 << 3
VFIO_DEVICE_GET_REGION_INFO = vfio_io(VFIO_BASE + 8)

VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1


class vfio_region_sparse_mmap_area(Struct):
    _fields_ = [("offset", u64), ("size", u64)]


class vfio_region_info_cap_sparse_mmap(Struct):
    _fields_ = [
        ("header", vfio_info_cap_header),
        ("nr_areas", u32),
        ("reserved", u32),
        ("areas", flex(vfio_region_sparse_mmap_area)),
    ]


VFIO_REGION_INFO_CAP_TYPE = 2


class vfio_region_info_cap_type(Struct):
    _fields_ = [("header", vfio_info_cap_header), ("type", u32), ("subtype", u32)]


VFIO_REGION_TYPE_PCI_VENDOR_TYPE = 1 << 31
VFIO_REGION_TYPE_PCI_VENDOR_MASK = 0xFFFF
VFIO_REGION_TYPE_GFX = 1
VFIO_REGION_TYPE_CCW = 2
VFIO_REGION_TYPE_MIGRATION_DEPRECATED = 3
VFIO_REGION_SUBTYPE_INTEL_IGD_OPREGION = 1
VFIO_REGION_SUBTYPE_INTEL_IGD_HOST_CFG = 2
VFIO_REGION_SUBTYPE_INTEL_IGD_LPC_CFG = 3
VFIO_REGION_SUBTYPE_NVIDIA_NVLINK2_RAM = 1
VFIO_REGION_SUBTYPE_IBM_NVLINK2_ATSD = 1
VFIO_REGION_SUBTYPE_GFX_EDID = 1


class vfio_region_gfx_edid(Struct):
    _fields_ = [
        ("edid_offset", u32),
        ("edid_max_size", u32),
        ("edid_size", u32),
        ("max_xres", u32),
        ("max_yres", u32),
        ("link_state", u32),
    ]


VFIO_DEVICE_GFX_LINK_STATE_UP = 1
VFIO_DEVICE_GFX_LINK_STATE_DOWN = 2
VFIO_REGION_SUBTYPE_CCW_ASYNC_CMD = 1
VFIO_REGION_SUBTYPE_CCW_SCHIB = 2
VFIO_REGION_SUBTYPE_CCW_CRW = 3
VFIO_REGION_SUBTYPE_MIGRATION_DEPRECATED = 1


class vfio_device_migration_info(Struct):
    _fields_ = [
        ("device_state", u32),
        ("reserved", u32),
        ("pending_bytes", u64),
        ("data_offset", u64),
        ("data_size", u64),
    ]


VFIO_DEVICE_STATE_V1_STOP = 0
VFIO_DEVICE_STATE_V1_RUNNING = 1 << 0
VFIO_DEVICE_STATE_V1_SAVING = 1 << 1
VFIO_DEVICE_STATE_V1_RESUMING = 1 << 2
VFIO_DEVICE_STATE_MASK = (
    VFIO_DEVICE_STATE_V1_RUNNING | VFIO_DEVICE_STATE_V1_SAVING | VFIO_DEVICE_STATE_V1_RESUMING
)

VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3
VFIO_REGION_INFO_CAP_NVLINK2_SSATGT = 4


class vfio_region_info_cap_nvlink2_ssatgt(Struct):
    _fields_ = [("header", vfio_info_cap_header), ("tgt", u64)]


VFIO_REGION_INFO_CAP_NVLINK2_LNKSPD = 5


class vfio_region_info_cap_nvlink2_lnkspd(Struct):
    _fields_ = [("header", vfio_info_cap_header), ("link_speed", u32), ("__pad", u32)]


# --- IRQs ---------------------------------------------------------------------------------------
class vfio_irq_info(Struct):
    _fields_ = [("argsz", u32), ("flags", u32), ("index", u32), ("count", u32)]


VFIO_IRQ_INFO_EVENTFD = 1 << 0
VFIO_IRQ_INFO_MASKABLE = 1 << 1
VFIO_IRQ_INFO_AUTOMASKED = 1 << 2
VFIO_IRQ_INFO_NORESIZE = 1 << 3
VFIO_DEVICE_GET_IRQ_INFO = vfio_io(VFIO_BASE + 9)


class vfio_irq_set(Struct):
    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("index", u32),
        ("start", u32),
        ("count", u32),
        ("data", flex(u8)),
    ]


VFIO_IRQ_SET_DATA_NONE = 1 << 0
VFIO_IRQ_SET_DATA_BOOL = 1 << 1
VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2
VFIO_IRQ_SET_ACTION_MASK = 1 << 3
VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4
VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5
VFIO_DEVICE_SET_IRQS = vfio_io(VFIO_BASE + 10)
VFIO_IRQ_SET_DATA_TYPE_MASK = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD
VFIO_IRQ_SET_ACTION_TYPE_MASK = (
    VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER
)

VFIO_DEVICE_RESET = vfio_io(VFIO_BASE + 11)

VFIO_PCI_BAR0_REGION_INDEX = 0
VFIO_PCI_BAR1_REGION_INDEX = 1
VFIO_PCI_BAR2_REGION_INDEX = 2
VFIO_PCI_BAR3_REGION_INDEX = 3
VFIO_PCI_BAR4_REGION_INDEX = 4
VFIO_PCI_BAR5_REGION_INDEX = 5
VFIO_PCI_ROM_REGION_INDEX = 6
VFIO_PCI_CONFIG_REGION_INDEX = 7
VFIO_PCI_VGA_REGION_INDEX = 8
VFIO_PCI_NUM_REGIONS = 9

VFIO_PCI_INTX_IRQ_INDEX = 0
VFIO_PCI_MSI_IRQ_INDEX = 1
VFIO_PCI_MSIX_IRQ_INDEX = 2
VFIO_PCI_ERR_IRQ_INDEX = 3
VFIO_PCI_REQ_IRQ_INDEX = 4
VFIO_PCI_NUM_IRQS = 5

VFIO_CCW_CONFIG_REGION_INDEX = 0
VFIO_CCW_NUM_REGIONS = 1
VFIO_CCW_IO_IRQ_INDEX = 0
VFIO_CCW_CRW_IRQ_INDEX = 1
VFIO_CCW_REQ_IRQ_INDEX = 2
VFIO_CCW_NUM_IRQS = 3
VFIO_AP_REQ_IRQ_INDEX = 0
VFIO_AP_NUM_IRQS = 2


# --- hot reset ----------------------------------------------------------------------------------
class _vfio_pci_dependent_device_id(Union):
    _fields_ = [("group_id", u32), ("devid", u32)]


class vfio_pci_dependent_device(Struct):
    _anonymous_ = ("_id",)
    _fields_ = [("_id", _vfio_pci_dependent_device_id), ("segment", u16), ("bus", u8), ("devfn", u8)]


VFIO_PCI_DEVID_OWNED = 0
VFIO_PCI_DEVID_NOT_OWNED = -1


class vfio_pci_hot_reset_info(Struct):
    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("count", u32),
        ("devices", flex(vfio_pci_dependent_device)),
    ]


VFIO_PCI_HOT_RESET_FLAG_DEV_ID = 1 << 0
VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED = 1 << 1
VFIO_DEVICE_GET_PCI_HOT_RESET_INFO = vfio_io(VFIO_BASE + 12)


class vfio_pci_hot_reset(Struct):
    _fields_ = [("argsz", u32), ("flags", u32), ("count", u32), ("group_fds", flex(s32))]


VFIO_DEVICE_PCI_HOT_RESET = vfio_io(VFIO_BASE + 13)


# --- graphics -----------------------------------------------------------------------------------
class _vfio_gfx_plane_id(Union):
    _fields_ = [("region_index", u32), ("dmabuf_id", u32)]


class vfio_device_gfx_plane_info(Struct):
    _anonymous_ = ("_id",)
    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("drm_plane_type", u32),
        ("drm_format", u32),
        ("drm_format_mod", u64),
        ("width", u32),
        ("height", u32),
        ("stride", u32),
        ("size", u32),
        ("x_pos", u32),
        ("y_pos", u32),
        ("x_hot", u32),
        ("y_hot", u32),
        ("_id", _vfio_gfx_plane_id),
        ("reserved", u32),
    ]


VFIO_GFX_PLANE_TYPE_PROBE = 1 << 0
VFIO_GFX_PLANE_TYPE_DMABUF = 1 << 1
VFIO_GFX_PLANE_TYPE_REGION = 1 << 2
VFIO_DEVICE_QUERY_GFX_PLANE = vfio_io(VFIO_BASE + 14)
VFIO_DEVICE_GET_GFX_DMABUF = vfio_io(VFIO_BASE + 15)


# --- ioeventfd ----------------------------------------------------------------------------------
class vfio_device_ioeventfd(Struct):
    _fields_ = [("argsz", u32), ("flags", u32), ("offset", u64), ("data", u64), ("fd", s32), ("reserved", u32)]


VFIO_DEVICE_IOEVENTFD_8 = 1 << 0
VFIO_DEVICE_IOEVENTFD_16 = 1 << 1
VFIO_DEVICE_IOEVENTFD_32 = 1 << 2
VFIO_DEVICE_IOEVENTFD_64 = 1 << 3
VFIO_DEVICE_IOEVENTFD_SIZE_MASK = 0xF
VFIO_DEVICE_IOEVENTFD = vfio_io(VFIO_BASE + 16)


# --- device features ----------------------------------------------------------------------------
class vfio_device_feature(Struct):
    _fields_ = [("argsz", u32), ("flags", u32), ("data", flex(u8))]


VFIO_DEVICE_FEATURE_MASK = 0xFFFF
VFIO_DEVICE_FEATURE_GET = 1 << 16
VFIO_DEVICE_FEATURE_SET = 1 << 17
VFIO_DEVICE_FEATURE_PROBE = 1 << 18
VFIO_DEVICE_FEATURE = vfio_io(VFIO_BASE + 17)


# --- iommufd binding (device cdev) --------------------------------------------------------------
class vfio_device_bind_iommufd(Struct):
    # token_uuid_ptr: 7.x kernels (with VFIO_DEVICE_BIND_FLAG_TOKEN); a 6.12 kernel accepts the
    # larger argsz as long as the field is zero (copy_struct_from_user)
    _fields_ = [("argsz", u32), ("flags", u32), ("iommufd", s32), ("out_devid", u32),
                ("token_uuid_ptr", u64)]


VFIO_DEVICE_BIND_FLAG_TOKEN = 1 << 0


VFIO_DEVICE_BIND_IOMMUFD = vfio_io(VFIO_BASE + 18)


class vfio_device_attach_iommufd_pt(Struct):
    # pasid: 7.x; a 6.12 kernel takes the larger argsz while the flag is clear
    _fields_ = [("argsz", u32), ("flags", u32), ("pt_id", u32), ("pasid", u32)]


VFIO_DEVICE_ATTACH_PASID = 1 << 0


VFIO_DEVICE_ATTACH_IOMMUFD_PT = vfio_io(VFIO_BASE + 19)


class vfio_device_detach_iommufd_pt(Struct):
    _fields_ = [("argsz", u32), ("flags", u32), ("pasid", u32)]


VFIO_DEVICE_DETACH_PASID = 1 << 0


VFIO_DEVICE_DETACH_IOMMUFD_PT = vfio_io(VFIO_BASE + 20)

VFIO_DEVICE_FEATURE_PCI_VF_TOKEN = 0


class vfio_device_feature_migration(Struct):
    _fields_ = [("flags", u64)]


VFIO_MIGRATION_STOP_COPY = 1 << 0
VFIO_MIGRATION_P2P = 1 << 1
VFIO_MIGRATION_PRE_COPY = 1 << 2
VFIO_DEVICE_FEATURE_MIGRATION = 1


class vfio_device_feature_mig_state(Struct):
    _fields_ = [("device_state", u32), ("data_fd", s32)]


VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE = 2
VFIO_DEVICE_STATE_ERROR = 0
VFIO_DEVICE_STATE_STOP = 1
VFIO_DEVICE_STATE_RUNNING = 2
VFIO_DEVICE_STATE_STOP_COPY = 3
VFIO_DEVICE_STATE_RESUMING = 4
VFIO_DEVICE_STATE_RUNNING_P2P = 5
VFIO_DEVICE_STATE_PRE_COPY = 6
VFIO_DEVICE_STATE_PRE_COPY_P2P = 7
VFIO_DEVICE_STATE_NR = 8


class vfio_precopy_info(Struct):
    _fields_ = [("argsz", u32), ("flags", u32), ("initial_bytes", u64), ("dirty_bytes", u64)]


VFIO_MIG_GET_PRECOPY_INFO = vfio_io(VFIO_BASE + 21)
VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY = 3


class vfio_device_low_power_entry_with_wakeup(Struct):
    _fields_ = [("wakeup_eventfd", s32), ("reserved", u32)]


VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP = 4
VFIO_DEVICE_FEATURE_LOW_POWER_EXIT = 5


class vfio_device_feature_dma_logging_control(Struct):
    _fields_ = [("page_size", u64), ("num_ranges", u32), ("__reserved", u32), ("ranges", u64)]


class vfio_device_feature_dma_logging_range(Struct):
    _fields_ = [("iova", u64), ("length", u64)]


VFIO_DEVICE_FEATURE_DMA_LOGGING_START = 6
VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP = 7


class vfio_device_feature_dma_logging_report(Struct):
    _fields_ = [("iova", u64), ("length", u64), ("page_size", u64), ("bitmap", u64)]


VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT = 8


class vfio_device_feature_mig_data_size(Struct):
    _fields_ = [("stop_copy_length", u64)]


VFIO_DEVICE_FEATURE_MIG_DATA_SIZE = 9


class vfio_device_feature_bus_master(Struct):
    _fields_ = [("op", u32)]


VFIO_DEVICE_FEATURE_CLEAR_MASTER = 0
VFIO_DEVICE_FEATURE_SET_MASTER = 1
VFIO_DEVICE_FEATURE_BUS_MASTER = 10


# --- type1 container IOMMU (legacy) -------------------------------------------------------------
class vfio_iommu_type1_info(Struct):
    _fields_ = [("argsz", u32), ("flags", u32), ("iova_pgsizes", u64), ("cap_offset", u32), ("pad", u32)]


VFIO_IOMMU_INFO_PGSIZES = 1 << 0
VFIO_IOMMU_INFO_CAPS = 1 << 1
VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1


class vfio_iova_range(Struct):
    _fields_ = [("start", u64), ("end", u64)]


class vfio_iommu_type1_info_cap_iova_range(Struct):
    _fields_ = [
        ("header", vfio_info_cap_header),
        ("nr_iovas", u32),
        ("reserved", u32),
        ("iova_ranges", flex(vfio_iova_range)),
    ]


VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 2


class vfio_iommu_type1_info_cap_migration(Struct):
    _fields_ = [
        ("header", vfio_info_cap_header),
        ("flags", u32),
        ("pgsize_bitmap", u64),
        ("max_dirty_bitmap_size", u64),
    ]


VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3


class vfio_iommu_type1_info_dma_avail(Struct):
    _fields_ = [("header", vfio_info_cap_header), ("avail", u32)]


VFIO_IOMMU_GET_INFO = vfio_io(VFIO_BASE + 12)


class vfio_iommu_type1_dma_map(Struct):
    _fields_ = [("argsz", u32), ("flags", u32), ("vaddr", u64), ("iova", u64), ("size", u64)]


VFIO_DMA_MAP_FLAG_READ = 1 << 0
VFIO_DMA_MAP_FLAG_WRITE = 1 << 1
VFIO_DMA_MAP_FLAG_VADDR = 1 << 2
VFIO_IOMMU_MAP_DMA = vfio_io(VFIO_BASE + 13)


class vfio_bitmap(Struct):
    _fields_ = [("pgsize", u64), ("size", u64), ("data", u64)]  # __u64 __user *data


class vfio_iommu_type1_dma_unmap(Struct):
    _fields_ = [("argsz", u32), ("flags", u32), ("iova", u64), ("size", u64), ("data", flex(u8))]


VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1 << 0
VFIO_DMA_UNMAP_FLAG_ALL = 1 << 1
VFIO_DMA_UNMAP_FLAG_VADDR = 1 << 2
VFIO_IOMMU_UNMAP_DMA = vfio_io(VFIO_BASE + 14)
VFIO_IOMMU_ENABLE = vfio_io(VFIO_BASE + 15)
VFIO_IOMMU_DISABLE = vfio_io(VFIO_BASE + 16)


class vfio_iommu_type1_dirty_bitmap(Struct):
    _fields_ = [("argsz", u32), ("flags", u32), ("data", flex(u8))]


VFIO_IOMMU_DIRTY_PAGES_FLAG_START = 1 << 0
VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP = 1 << 1
VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP = 1 << 2


class vfio_iommu_type1_dirty_bitmap_get(Struct):
    _fields_ = [("iova", u64), ("size", u64), ("bitmap", vfio_bitmap)]


VFIO_IOMMU_DIRTY_PAGES = vfio_io(VFIO_BASE + 17)


# --- sPAPR TCE (legacy, POWER) ------------------------------------------------------------------
class vfio_iommu_spapr_tce_ddw_info(Struct):
    _fields_ = [("pgsizes", u64), ("max_dynamic_windows_supported", u32), ("levels", u32)]


class vfio_iommu_spapr_tce_info(Struct):
    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("dma32_window_start", u32),
        ("dma32_window_size", u32),
        ("ddw", vfio_iommu_spapr_tce_ddw_info),
    ]


VFIO_IOMMU_SPAPR_INFO_DDW = 1 << 0
VFIO_IOMMU_SPAPR_TCE_GET_INFO = vfio_io(VFIO_BASE + 12)


class vfio_eeh_pe_err(Struct):
    _fields_ = [("type", u32), ("func", u32), ("addr", u64), ("mask", u64)]


class _vfio_eeh_pe_op_u(Union):
    _fields_ = [("err", vfio_eeh_pe_err)]


class vfio_eeh_pe_op(Struct):
    _anonymous_ = ("_u",)
    _fields_ = [("argsz", u32), ("flags", u32), ("op", u32), ("_u", _vfio_eeh_pe_op_u)]


VFIO_EEH_PE_DISABLE = 0
VFIO_EEH_PE_ENABLE = 1
VFIO_EEH_PE_UNFREEZE_IO = 2
VFIO_EEH_PE_UNFREEZE_DMA = 3
VFIO_EEH_PE_GET_STATE = 4
VFIO_EEH_PE_STATE_NORMAL = 0
VFIO_EEH_PE_STATE_RESET = 1
VFIO_EEH_PE_STATE_STOPPED = 2
VFIO_EEH_PE_STATE_STOPPED_DMA = 4
VFIO_EEH_PE_STATE_UNAVAIL = 5
VFIO_EEH_PE_RESET_DEACTIVATE = 5
VFIO_EEH_PE_RESET_HOT = 6
VFIO_EEH_PE_RESET_FUNDAMENTAL = 7
VFIO_EEH_PE_CONFIGURE = 8
VFIO_EEH_PE_INJECT_ERR = 9
VFIO_EEH_PE_OP = vfio_io(VFIO_BASE + 21)


class vfio_iommu_spapr_register_memory(Struct):
    _fields_ = [("argsz", u32), ("flags", u32), ("vaddr", u64), ("size", u64)]


VFIO_IOMMU_SPAPR_REGISTER_MEMORY = vfio_io(VFIO_BASE + 17)
VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY = vfio_io(VFIO_BASE + 18)


class vfio_iommu_spapr_tce_create(Struct):
    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("page_shift", u32),
        ("__resv1", u32),
        ("window_size", u64),
        ("levels", u32),
        ("__resv2", u32),
        ("start_addr", u64),
    ]


VFIO_IOMMU_SPAPR_TCE_CREATE = vfio_io(VFIO_BASE + 19)


class vfio_iommu_spapr_tce_remove(Struct):
    _fields_ = [("argsz", u32), ("flags", u32), ("start_addr", u64)]


VFIO_IOMMU_SPAPR_TCE_REMOVE = vfio_io(VFIO_BASE + 20)
