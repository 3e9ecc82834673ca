"""The runner recipe (examples/ci): the GitHub Actions workflow is parsed and its shell steps
run in order in the VM, as a runner would (a failed step skips the rest but the `always()`
ones); the igb PF is the runner's NIC, edu the self-test device."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from vmhelpers import EDU, IGB, IGBVF, NO_UNUSED_PLUGINS, STATE, driver_of, find_all, find_pci

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "examples/ci/github-actions.yml"

pytestmark = pytest.mark.requires("sriov")


def _expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: values[m[1]], text)


def test_the_workflow_runs_and_gives_everything_back(tmp_path):
    pf, edu = find_pci(IGB), find_pci(EDU)
    assert driver_of(pf) == "igb" and driver_of(edu) is None and not find_all(IGBVF)
    values = {"vars.VFIO_PF": pf, "vars.VFIO_SELFTEST_DEVICE": edu,
              "runner.temp": str(tmp_path)}
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["nic"]
    env = {**os.environ, **{k: _expand(str(v), values) for k, v in job["env"].items()},
           "TESTS": str(REPO / "examples/ci/test_nic_example.py"), "SUDO": "",
           "VFIOCTL": f"{sys.executable} -m vfioctl",
           # the bed's plugins a runner would not have (the recipe's own pytest line unchanged)
           "PYTEST_ADDOPTS": " ".join(NO_UNUSED_PLUGINS),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    failed, ran = False, []
    for step in job["steps"]:
        if "run" not in step or "pip install" in step["run"]:
            continue  # actions, and the install (the bed has vfioctl installed already)
        if failed and "always()" not in str(step.get("if", "")):
            continue
        p = subprocess.run(["bash", "-e", "-c", _expand(step["run"], values)], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=600)
        ran.append((step["name"], p.returncode, p.stdout[-2000:] + p.stderr[-2000:]))
        failed = failed or p.returncode != 0
    assert not failed, ran
    assert [n for n, _, _ in ran] == ["create a VF and bind it", "vfioctl probe",
                                      "vfioctl selftest", "the hardware test suite",
                                      "give the devices back"]
    assert json.loads((tmp_path / "probe.json").read_text())["ok"]
    assert json.loads((tmp_path / "selftest.json").read_text())["ok"]
    cases = list(ET.parse(tmp_path / "hw-junit.xml").getroot().iter("testcase"))
    assert len(cases) == 2 and not any(c.find("failure") is not None for c in cases)
    # everything given back: the VF gone, the PF on igb, edu driverless, no records
    assert not find_all(IGBVF) and driver_of(pf) == "igb" and driver_of(edu) is None
    assert not (STATE.exists() and json.loads(STATE.read_text()))
    assert Path(f"/sys/bus/pci/devices/{pf}/sriov_drivers_autoprobe").read_text().strip() == "1"
