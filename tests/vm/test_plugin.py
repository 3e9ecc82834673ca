"""The pytest plugin (an installed pytest11 entry point) in a user's test run: no conftest of
ours, a fresh pytest process, a real device."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import entry_points

from vmhelpers import EDU, NO_UNUSED_PLUGINS, STATE, driver_of, find_all, find_pci, offered_modes

USER_TESTS = '''
import pytest

def test_reads_the_id(vfio_session, vfio_iommu_mode):
    assert vfio_session.iommu_mode == vfio_iommu_mode
    assert vfio_session.device.config.read(0, 4) == 0x11e81234

def test_device_is_on_vfio(vfio_device):
    assert vfio_device.driver == "vfio-pci"

@pytest.mark.vfio(ids="8086:10c9")
def test_only_on_igb(vfio_device):
    pass

def test_without_devices():
    pass
'''

FAILING = '''
import pytest

@pytest.fixture
def broken(vfio_device):
    raise RuntimeError("fixture error")

def test_fails(vfio_session):
    assert False, "a failing user test"

def test_fixture_error(broken):
    pass
'''


def _pytest(tmp_path, text, *args):
    (tmp_path / "test_user.py").write_text(text)
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                        *NO_UNUSED_PLUGINS, "-q",
                        "--rootdir", str(tmp_path), str(tmp_path / "test_user.py"), *args],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    return p.returncode, p.stdout + p.stderr


def test_the_plugin_is_an_installed_entry_point():
    assert any(ep.value == "vfioctl.pytest_plugin" for ep in entry_points(group="pytest11"))


def test_user_tests_bind_edu_per_mode_and_give_it_back(tmp_path):
    edu = find_pci(EDU)
    assert driver_of(edu) is None
    modes = offered_modes()
    edus = find_all(EDU)  # 1234:11e8 selects both of the bed's edus
    assert len(edus) == 2 and all(driver_of(e) is None for e in edus)
    args = ["--vfio-device", EDU, *[a for m in modes for a in ("--vfio-iommu-mode", m)],
            "-v", "-v"]
    rc, out = _pytest(tmp_path, USER_TESTS, *args)
    assert rc == 0, out
    for e in edus:
        for m in modes:
            assert f"test_reads_the_id[{e}-{m}] PASSED" in out, out
            assert f"test_device_is_on_vfio[{e}-{m}] PASSED" in out
        assert f"{e} is {EDU}, not 8086:10c9" in out, out
    assert "test_without_devices PASSED" in out
    assert "vfioctl: deselected 1 test(s): " in out
    returned = next(ln for ln in out.splitlines() if ln.startswith("vfioctl: returned "))
    assert sorted(returned[len("vfioctl: returned "):].split(" to ")[0].split(", ")) == edus
    assert all(driver_of(e) is None for e in edus)
    assert not any(e in (STATE.read_text() if STATE.exists() else "") for e in edus)


def test_failures_and_fixture_errors_still_give_the_device_back(tmp_path):
    edu = find_pci(EDU)
    rc, out = _pytest(tmp_path, FAILING, "--vfio-device", edu)
    assert rc == 1 and "1 failed" in out and "1 error" in out, out
    assert "a failing user test" in out and "fixture error" in out
    assert driver_of(edu) is None


def test_without_a_device_nothing_is_bound_and_device_tests_are_deselected(tmp_path):
    edu = find_pci(EDU)
    rc, out = _pytest(tmp_path, USER_TESTS)
    assert rc == 0 and "1 passed, 3 deselected" in out, out
    assert "vfioctl: deselected 3 test(s): no --vfio-device selected" in out
    assert driver_of(edu) is None


def test_probe_checks_become_junit_testcases(tmp_path):
    edu = find_pci(EDU)
    xml = tmp_path / "junit.xml"
    rc, out = _pytest(tmp_path, "", "--vfio-device", edu, "--vfio-probe",
                      f"--junitxml={xml}")
    assert rc == 0, out
    cases = ET.parse(xml).getroot().iter("testcase")
    names = [c.get("name") for c in cases]
    # one per check: 50 on the cdev, 26-27 on the group path (README, test-bed facts)
    assert len(names) >= 26 and all(n.startswith(f"vfio_probe[{edu}-") for n in names), names
    assert any(n.endswith("::BIND /dev/iommu") or "GROUP_GET_DEVICE_FD" in n for n in names)
    assert driver_of(edu) is None
