"""`vfioctl doctor` on the machine running the tests: every failed check names its fix, and the
verdict follows the modes."""
import json
import os
import subprocess
import sys


def test_doctor_names_each_missing_piece_on_this_host():
    p = subprocess.run([sys.executable, "-m", "vfioctl", "doctor", "--json"], capture_output=True,
                       text=True)
    report = json.loads(p.stdout)
    assert p.returncode == (0 if report["ok"] else 1)
    assert report["ok"] == bool(report["usable_modes"]) or not report["ok"]
    failed = [c for c in report["checks"] if not c["ok"]]
    assert all(c["fix"] for c in failed), failed
    assert {c["status"] for c in report["checks"]} <= {"PASS", "FAIL", "NOTE"}
    by_name = {c["name"]: c for c in report["checks"]}
    if not os.path.exists("/dev/iommu"):
        cdev = by_name["device cdev + iommufd"]
        assert not cdev["ok"] and "CONFIG_IOMMUFD" in cdev["detail"]
        assert "iommufd" not in report["usable_modes"]
    if not os.listdir("/sys/class/iommu") if os.path.isdir("/sys/class/iommu") else True:
        assert not report["ok"] and report["usable_modes"] == []
    assert by_name["compiled hot paths"]["status"] == "PASS"  # the install built the extension
    hidden = subprocess.run([sys.executable, "-c", "import sys; sys.modules['vfioctl._speedups']"
                             " = None; from vfioctl.cli import main; main()", "doctor", "--json"],
                            capture_output=True, text=True)
    speed = {c["name"]: c for c in json.loads(hidden.stdout)["checks"]}["compiled hot paths"]
    assert speed["status"] == "NOTE" and "python3-dev" in speed["fix"], speed
    assert [m["mode"] for m in report["modes"]] == [
        "iommufd", "iommufd_compat_type1", "iommufd_compat_type1v2", "vfio_type1_iommu",
        "vfio_type1v2_iommu"]
    assert all(m["why_not"] for m in report["modes"] if not m["available"])
    text = subprocess.run([sys.executable, "-m", "vfioctl", "doctor"], capture_output=True,
                          text=True)
    assert text.returncode == p.returncode and "Traceback" not in text.stderr
    for c in failed:
        assert f"[{c['status']}] {c['name']}" in text.stdout and f"fix: {c['fix']}" in text.stdout
    assert text.stdout.splitlines()[-1].startswith("verdict: ")


def test_setup_permissions_asks_to_create_only_a_group_this_host_lacks():
    """udev ignores a rule naming an unknown group (it only logs it): `groupadd` is the first
    step exactly when /etc/group has no such group (root always exists; the other name no
    host has)."""
    def run(group, **env):
        base = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
        p = subprocess.run([sys.executable, "-m", "vfioctl", "setup-permissions", "--group", group,
                            "--json"], capture_output=True, text=True, env={**base, **env})
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    root = run("root")
    assert root["gid"] == 0 and not any("groupadd" in s for s in root["steps"])
    assert root["steps"][0].startswith("usermod -aG root ")
    lacking = run("vfioctl-no-such-grp")
    assert lacking["gid"] is None
    assert lacking["steps"][0].startswith("groupadd --system vfioctl-no-such-grp ")
    assert lacking["steps"][1:] == [s.replace("root", "vfioctl-no-such-grp")
                                    for s in root["steps"]]

    # the user to add: the one who ran sudo; as root without sudo, the placeholder
    assert run("root")["steps"][0].startswith("usermod -aG root USER ") or os.geteuid() != 0
    assert run("root", SUDO_USER="alice")["steps"][0].startswith("usermod -aG root alice ") \
        or os.geteuid() != 0


def test_setup_permissions_names_the_caller_who_is_not_root(monkeypatch):
    """Run as a user (the interpreter here is root's, so in-process, as that uid): the step
    names them, sudo or not."""
    import pwd

    from vfioctl import permissions

    nobody = pwd.getpwnam("nobody")
    monkeypatch.setattr(permissions.os, "geteuid", lambda: nobody.pw_uid)
    monkeypatch.setenv("SUDO_USER", "alice")  # not root: sudo did not make this process
    assert permissions.setup("vfio")["steps"][-3].startswith("usermod -aG vfio nobody ")
