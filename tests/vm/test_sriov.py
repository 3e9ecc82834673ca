"""SR-IOV on the igb PF: VF tokens as the kernel enforces them (the cases of the kernel's
vfio_pci_sriov_uapi_test: same, different and no token; the PF closed early; the token
overridden), and a PF bound with VFs recorded and restored with the same count."""
from __future__ import annotations

import errno
import json
import uuid
from pathlib import Path

import pytest
from vmhelpers import IGB, IGBVF, STATE, driver_of, find_all, find_pci, run_cli, state, \
    sysfs_bind, wait_for

import vfioctl
from vfioctl.errors import EnvironmentProblem, UsageError, VfTokenRefused

pytestmark = pytest.mark.requires("sriov")

T1 = "52ac9bff-3a88-4fbd-901a-0d767c3b6c97"  # the kernel test's UUID_1 and UUID_2
T2 = "88594674-90a0-47a9-aea8-9d9b352ac08a"
ENABLE_SRIOV = Path("/sys/module/vfio_pci/parameters/enable_sriov")
VENDOR_DEVICE_VF = 0x10CA8086


def _numvfs(pf: str, n: int) -> None:
    Path(f"/sys/bus/pci/devices/{pf}/sriov_numvfs").write_text(str(n))
    wait_for(lambda: len(find_all(IGBVF)) == n, what=f"{n} VFs")


@pytest.fixture
def pf_on_vfio():
    """The igb PF on vfio-pci with vfio-pci's enable_sriov on, and no VFs; afterwards: VFs
    removed, the PF back on igb, enable_sriov as it was."""
    pf = find_pci(IGB)
    assert driver_of(pf) == "igb" and not find_all(IGBVF)
    before = ENABLE_SRIOV.read_text().strip()
    ENABLE_SRIOV.write_text("Y")
    rc, out, err = run_cli("bind", pf)
    assert rc == 0, err
    try:
        yield pf
    finally:
        for vf in find_all(IGBVF):
            if driver_of(vf):
                sysfs_bind(vf, None)
        _numvfs(pf, 0)
        rc, out, err = run_cli("unbind", pf)
        ENABLE_SRIOV.write_text(before)
    assert rc == 0 and driver_of(pf) == "igb", err


def _vendor(s) -> int:
    return s.device.config.read(0, 4)


def test_vf_token_rules(pf_on_vfio, mode):
    """The kernel's vfio_pci_sriov_uapi_test, in vfioctl's words: the PF's token opens its VF,
    a different or no token is EACCES; after the PF closes, its token still rules; a token
    overridden through VFIO_DEVICE_FEATURE_PCI_VF_TOKEN is the one that opens the VF."""
    pf = pf_on_vfio
    from vmhelpers import kernel_features

    cdev_without_flag = mode == "iommufd" and not kernel_features()["bind_token"]
    with vfioctl.open(pf, iommu_mode=mode) as p:
        p.device.set_vf_token(T1)
        _numvfs(pf, 1)
        vf = find_all(IGBVF)[0]
        # vfio-pci puts the VFs of a PF it drives on itself (driver_override)
        wait_for(lambda: driver_of(vf) == "vfio-pci", what="the VF on vfio-pci")
        if cdev_without_flag:
            # 6.12's cdev takes no token, and checks none: the VF opens without one (measured;
            # the group path of the same kernel enforces the token, 7.x's cdev does too)
            with vfioctl.open(vf, iommu_mode=mode) as v:
                assert _vendor(v) == VENDOR_DEVICE_VF
            with pytest.raises(EnvironmentProblem, match="takes no VF token") as e:
                vfioctl.open(vf, iommu_mode=mode, vf_token=T1)
            assert e.value.fix == "group-path"
            return
        with pytest.raises(VfTokenRefused, match="needs the PF's VF token") as e:
            vfioctl.open(vf, iommu_mode=mode)
        assert e.value.errno == errno.EACCES
        with vfioctl.open(vf, iommu_mode=mode, vf_token=T1) as v:  # same_uuid
            assert _vendor(v) == VENDOR_DEVICE_VF
        with pytest.raises(VfTokenRefused, match="not the token") as e:  # diff_uuid
            vfioctl.open(vf, iommu_mode=mode, vf_token=T2)
        assert e.value.errno == errno.EACCES
        p.device.set_vf_token(T2)  # override_token
        with pytest.raises(VfTokenRefused):
            vfioctl.open(vf, iommu_mode=mode, vf_token=T1)
        with vfioctl.open(vf, iommu_mode=mode, vf_token=T2) as v:
            assert _vendor(v) == VENDOR_DEVICE_VF
    # pf_early_close: the PF's token outlives its user
    with vfioctl.open(vf, iommu_mode=mode, vf_token=T2) as v:
        assert _vendor(v) == VENDOR_DEVICE_VF
    with pytest.raises(VfTokenRefused):
        vfioctl.open(vf, iommu_mode=mode, vf_token=T1)
    # the same through the CLI: --vf-token and VFIOCTL_VF_TOKEN
    rc, out, err = run_cli("read", vf, "config", "0", "--iommu-mode", mode, "--vf-token", T2,
                           "--json")
    assert rc == 0 and json.loads(out)["values"] == [VENDOR_DEVICE_VF], err
    rc, out, err = run_cli("info", vf, "--iommu-mode", mode, env={"VFIOCTL_VF_TOKEN": T2})
    assert rc == 0, err
    rc, out, err = run_cli("info", vf, "--iommu-mode", mode)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 2, err
    assert "needs the PF's VF token" in err and "EACCES" in err


def test_token_where_none_applies_is_a_usage_error(pf_on_vfio, edu, mode):
    with pytest.raises(UsageError, match="neither an SR-IOV VF nor an SR-IOV PF"):
        vfioctl.open(edu, iommu_mode=mode, vf_token=T1)
    with pytest.raises(UsageError, match="not a UUID|UUID"):
        vfioctl.open(pf_on_vfio, iommu_mode=mode, vf_token="not-a-uuid")


def test_vf_token_for_a_vf_whose_pf_is_on_its_host_driver_is_refused_up_front():
    pf = find_pci(IGB)
    assert driver_of(pf) == "igb"
    rc, out, err = run_cli("sriov", pf, "--numvfs", "1")
    assert rc == 0, err
    try:
        vf = find_all(IGBVF)[0]
        if driver_of(vf):
            sysfs_bind(vf, None)
        rc, out, err = run_cli("bind", vf)
        assert rc == 0, err
        rc, out, err = run_cli("info", vf, "--vf-token", str(uuid.uuid4()))
        assert rc == 2 and f"PF {pf} is on igb, not vfio-pci" in err, err
        rc, out, err = run_cli("info", vf)  # no token needed while the PF is on igb
        assert rc == 0, err
        # the PF cannot be bound while a VF is on vfio-pci, even forced
        rc, out, err = run_cli("bind", pf, "--force")
        assert rc == 2 and f"VFs {vf} are on vfio-pci" in err, err
        assert driver_of(pf) == "igb"
        rc, out, err = run_cli("unbind", vf)
        assert rc == 0, err
    finally:
        for v in find_all(IGBVF):
            if driver_of(v) == "vfio-pci":
                sysfs_bind(v, None)
        _numvfs(pf, 0)


@pytest.mark.parametrize("how", ["unbind", "restore"])
def test_pf_bound_with_vfs_is_restored_with_the_same_count(how):
    pf = find_pci(IGB)
    assert driver_of(pf) == "igb"
    rc, out, err = run_cli("sriov", pf, "--numvfs", "2")
    assert rc == 0, err
    try:
        vfs = find_all(IGBVF)
        held = {v: driver_of(v) for v in vfs}
        if any(held.values()):  # VFs on igbvf: a bind of the PF would remove them
            rc, out, err = run_cli("bind", pf)
            assert rc == 2 and "VFs are bound to drivers" in err, err
            assert all(v in err for v, d in held.items() if d)
            assert driver_of(pf) == "igb" and len(find_all(IGBVF)) == 2
        rc, out, err = run_cli("bind", pf, "--force")
        assert rc == 0 and driver_of(pf) == "vfio-pci", err
        assert state()[pf]["sriov_numvfs"] == 2 and state()[pf]["original_driver"] == "igb"
        # igb's remove disabled SR-IOV: the VFs went with it
        assert not find_all(IGBVF)
        rc, out, err = run_cli(how, *([pf] if how == "unbind" else []))
        assert rc == 0, err
        assert driver_of(pf) == "igb"
        assert len(wait_for(lambda: find_all(IGBVF), what="the VFs")) == 2
        assert Path(f"/sys/bus/pci/devices/{pf}/sriov_numvfs").read_text().strip() == "2"
        assert pf not in state()
    finally:
        if driver_of(pf) != "igb":
            sysfs_bind(pf, "igb")
        STATE.unlink(missing_ok=True)
        for v in find_all(IGBVF):
            if driver_of(v) == "vfio-pci":
                sysfs_bind(v, None)
        _numvfs(pf, 0)


def test_probe_adds_the_vf_token_rows(pf_on_vfio, mode):
    pf = pf_on_vfio
    from vmhelpers import kernel_features

    with vfioctl.open(pf, iommu_mode=mode) as p:
        p.device.set_vf_token(T1)
        _numvfs(pf, 1)
        vf = find_all(IGBVF)[0]
        wait_for(lambda: driver_of(vf) == "vfio-pci", what="the VF on vfio-pci")
        rc, out, err = run_cli("probe", vf, "--iommu-mode", mode, "--vf-token", T1, "--json")
        r = json.loads(out)
        rows = {c["name"]: c for c in r["checks"]}
        assert rc == 0 and r["ok"], (err, [c for c in r["checks"] if not c["ok"]], r["notes"])
        token_rows = [n for n in rows if "VF token" in n]
        if mode == "iommufd" and not kernel_features()["bind_token"]:
            assert [rows[n]["observed"] for n in token_rows] == ["EINVAL"]
            assert any("takes no VF token and checks none" in n for n in r["notes"])
        else:
            assert [rows[n]["observed"] for n in token_rows] == ["EACCES", "EACCES"], rows
            assert "config vendor:device equals sysfs" in rows or \
                "device fd: config vendor:device equals sysfs" in rows
            # without the token: the rows, and a note saying why it stopped there
            rc, out, err = run_cli("probe", vf, "--iommu-mode", mode, "--json")
            r = json.loads(out)
            assert rc == 0 and any("without its VF token" in n for n in r["notes"]), out
            assert [c["observed"] for c in r["checks"] if "VF token" in c["name"]] == \
                ["EACCES", "EACCES"]
