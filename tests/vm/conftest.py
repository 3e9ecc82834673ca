"""Fixtures for tests that run inside the test-bed VM, against the emulated devices.

Each device fixture puts its device on vfio-pci for the test and leaves it as it found it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from vmhelpers import EDU, IVSHMEM, driver_of, find_pci, sysfs_bind


def _on_vfio(ids: str):
    bdf = find_pci(ids)
    before = driver_of(bdf)
    sysfs_bind(bdf, "vfio-pci")
    yield bdf
    sysfs_bind(bdf, before)


@pytest.fixture
def edu():
    """edu's BDF, bound to vfio-pci for the test."""
    yield from _on_vfio(EDU)


@pytest.fixture
def ivshmem():
    yield from _on_vfio(IVSHMEM)


@pytest.fixture
def workdir() -> Path:
    return Path(os.environ["VFIOCTL_VM_WORKDIR"])
