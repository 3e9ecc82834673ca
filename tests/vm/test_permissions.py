"""Without root: vfioctl's udev rules applied to the nodes (as udev would: the guest runs no
udevd), then a user in the rules' group opens, reads, mmaps, maps DMA and runs the self-test on
a device root bound; a user outside it gets an error naming the group and the fix."""
from __future__ import annotations

import grp
import os
import re
from pathlib import Path

import pytest
from vmhelpers import run_cli

from vfioctl.permissions import udev_rules

USER = 1000
RULE = re.compile(r'SUBSYSTEM=="([^"]+)"(?:, KERNEL=="([^"]+)")?, GROUP="([^"]+)", MODE="([0-7]+)"')


def _group() -> grp.struct_group:
    """An existing group the test user is not in (the guest's /etc is the host's, read-only)."""
    for name in ("kvm", "users", "plugdev", "render"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            continue
    pytest.fail("no group to give the nodes to")


def _apply(rules: str, gid: int) -> dict[str, tuple[int, int]]:
    """Apply the rules' SUBSYSTEM/KERNEL matches to the nodes under /dev (read from each
    device's uevent DEVNAME); the nodes' (gid, mode) before, by path."""
    before = {}
    matched = 0
    for line in rules.splitlines():
        m = RULE.match(line)
        if not m:
            continue
        subsystem, kernel, _, mode = m.groups()
        cls = Path("/sys/class") / subsystem
        for d in sorted(cls.iterdir()) if cls.exists() else []:
            if kernel and d.name != kernel:
                continue
            env = dict(kv.split("=", 1) for kv in (d / "uevent").read_text().split() if "=" in kv)
            if "DEVNAME" not in env:  # no node (udev would match it and do nothing)
                continue
            node = Path("/dev") / env["DEVNAME"]
            st = node.stat()
            before[str(node)] = (st.st_gid, st.st_mode & 0o7777)
            os.chown(node, -1, gid)
            os.chmod(node, int(mode, 8))
            matched += 1
    assert matched >= 2, "the rules matched no VFIO node"
    return before


@pytest.fixture
def nodes_for_group(edu):
    g = _group()
    before = _apply(udev_rules(g.gr_name), g.gr_gid)
    try:
        yield g, before
    finally:
        for path, (gid, mode) in before.items():
            os.chown(path, -1, gid)
            os.chmod(path, mode)


def test_a_member_of_the_group_uses_a_pre_bound_device(nodes_for_group, edu, mode):
    g, nodes = nodes_for_group
    needed = ["/dev/iommu"] if mode.startswith("iommufd") else []
    needed += ["/dev/vfio/vfio"] if mode != "iommufd" else []
    assert all(n in nodes for n in needed), nodes  # the rules reach every node this mode opens
    as_member = dict(user=USER, groups=(g.gr_gid,))
    rc, out, err = run_cli("read", edu, "config", "0", "--iommu-mode", mode, **as_member)
    assert rc == 0 and "0x11e81234" in out, err
    rc, out, err = run_cli("read", edu, "bar0", "0", "--mmap", "--iommu-mode", mode, **as_member)
    assert rc == 0 and "0x010000ed" in out, err  # edu's ID register, through the mmap
    rc, out, err = run_cli("selftest", edu, "--iommu-mode", mode, "--seconds", "0.1",
                           **as_member)  # DMA maps (pinned: counted in RLIMIT_MEMLOCK), MSI
    assert rc == 0, (out, err)
    rc, out, err = run_cli("bind", edu, **as_member)
    assert rc == 2 and "needs root" in err, err


def test_a_user_outside_the_group_is_told_the_group(nodes_for_group, edu, mode):
    g, _ = nodes_for_group
    rc, out, err = run_cli("info", edu, "--iommu-mode", mode, user=USER)
    assert rc == 2 and "permission denied" in err, err
    assert f"belongs to group {g.gr_name}" in err and "usermod -aG" in err, err
    assert "setup-permissions" in err
    rc, out, err = run_cli("doctor", edu, "--json", user=USER)  # doctor names the same fix
    assert f"belongs to group {g.gr_name}" in out, out
