"""`vfioctl doctor` on the machine running the tests: every failed check names its fix."""
import json
import os
import subprocess
import sys


def test_doctor_names_each_missing_piece_on_this_host():
    p = subprocess.run([sys.executable, "-m", "vfioctl", "doctor", "--json"], capture_output=True,
                       text=True)
    report = json.loads(p.stdout)
    assert p.returncode == (0 if report["ok"] else 1)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert all(c["fix"] for c in failed), failed
    by_name = {c["name"]: c for c in report["checks"]}
    if not os.path.exists("/dev/iommu"):
        assert not by_name["/dev/iommu present"]["ok"]
        assert "CONFIG_IOMMUFD" in by_name["/dev/iommu present"]["fix"]
        assert not report["ok"]
    text = subprocess.run([sys.executable, "-m", "vfioctl", "doctor"], capture_output=True,
                          text=True)
    assert text.returncode == p.returncode and "Traceback" not in text.stderr
    for c in failed:
        assert f"[FAIL] {c['name']}" in text.stdout and f"fix: {c['fix']}" in text.stdout
