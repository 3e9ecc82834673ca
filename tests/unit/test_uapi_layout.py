"""The ctypes UAPI layout equals the golden file made from the C headers (every run)."""
from pathlib import Path

from vfioctl.uapi import STRUCTS, layout

GOLDEN = Path(__file__).parents[1] / "golden" / "uapi-layout.txt"


def test_python_layout_equals_golden():
    golden = GOLDEN.read_text().splitlines()
    ours = layout.python_lines()
    missing = sorted(set(golden) - set(ours))
    extra = sorted(set(ours) - set(golden))
    assert not missing and not extra, f"differs from the C headers:\n-{missing[:20]}\n+{extra[:20]}"
    assert ours == golden


def test_golden_covers_every_struct_the_issue_names():
    names = set(STRUCTS)
    for needed in ["vfio_device_info", "vfio_region_info", "vfio_region_info_cap_sparse_mmap",
                   "vfio_region_info_cap_type", "vfio_irq_info", "vfio_irq_set",
                   "vfio_pci_hot_reset_info", "vfio_pci_hot_reset", "vfio_device_feature",
                   "vfio_device_bind_iommufd", "vfio_device_attach_iommufd_pt",
                   "vfio_device_detach_iommufd_pt", "vfio_group_status",
                   "vfio_iommu_type1_dma_map", "iommu_destroy", "iommu_ioas_alloc",
                   "iommu_ioas_iova_ranges", "iommu_ioas_allow_iovas", "iommu_ioas_map",
                   "iommu_ioas_copy", "iommu_ioas_unmap", "iommu_option", "iommu_vfio_ioas",
                   "iommu_hwpt_alloc", "iommu_hw_info"]:
        assert needed in names


def test_ioctl_numbers_are_plain_io_on_semicolon():
    from vfioctl import uapi
    assert uapi.VFIO_GET_API_VERSION == (ord(";") << 8) | 100
    assert uapi.VFIO_DEVICE_BIND_IOMMUFD == (ord(";") << 8) | 118
    assert uapi.IOMMU_IOAS_ALLOC == (ord(";") << 8) | 0x81
