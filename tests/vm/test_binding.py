"""Issue 4 proven in the VM: discovery, safe bind/unbind/restore, refusals, crashes, doctor."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from vmhelpers import (E1000E, EDU, ICH9_LPC, ICH9_SATA, ICH9_SMBUS, NVME, STATE, driver_of,
                       find_pci, nvme_disk, nvme_node, run_cli, state, sysfs_bind, wait_for)

# host-driver specifics measured on our kernels; tests/vm/test_modes.py binds on every kernel
pytestmark = pytest.mark.requires("cdev")



def netdev_of(bdf: str) -> str:
    """The interface's name once udev has renamed it (eth0 becomes enp0s14 a moment after the
    driver registers it, which a test must not race)."""
    wait_for(lambda: next(iter(os.listdir(f"/sys/bus/pci/devices/{bdf}/net")), None),
             what=f"{bdf}'s network interface")
    subprocess.run(["udevadm", "settle", "--timeout=30"], check=False)
    return next(iter(os.listdir(f"/sys/bus/pci/devices/{bdf}/net")))


def test_list_shows_drivers_groups_cdevs_and_viability(edu):
    rc, out, err = run_cli("list", "--json")
    assert rc == 0, err
    by_bdf = {e["bdf"]: e for e in json.loads(out)}
    e = by_bdf[edu]
    assert e["ids"] == EDU and e["driver"] == "vfio-pci" and e["vfio_viable"]
    assert e["cdev"] and e["cdev"].startswith("/dev/vfio/devices/vfio")
    nv = by_bdf[find_pci(NVME)]
    assert nv["driver"] == "nvme" and nv["cdev"] is None and not nv["vfio_viable"]
    sata = by_bdf[find_pci(ICH9_SATA)]
    assert len(sata["group_members"]) == 3 and not sata["vfio_viable"]
    rc, out, _ = run_cli("list", "--json", "--vfio")
    assert [x["bdf"] for x in json.loads(out)] == [edu]
    rc, out, _ = run_cli("list", "-d", "1b36:0010")
    assert rc == 0 and find_pci(NVME) in out and edu not in out


def test_nvme_bind_probe_unbind_roundtrip(nvme):
    node = nvme_node(nvme)
    rc, out, err = run_cli("bind", nvme)
    assert rc == 0, err
    assert "bound to vfio-pci (was nvme) -> /dev/vfio/devices/vfio" in out
    assert driver_of(nvme) == "vfio-pci"
    assert state()[nvme]["original_driver"] == "nvme"
    assert not os.path.exists(node)
    rc, out, err = run_cli("probe", nvme, "--json")
    assert rc == 0 and json.loads(out)["ok"], out + err
    rc, out, err = run_cli("unbind", nvme)
    assert rc == 0 and "returned to nvme" in out, err
    assert driver_of(nvme) == "nvme"
    nvme_node(nvme)
    assert nvme not in state()
    rc, out, err = run_cli("unbind", nvme)  # idempotent
    assert rc == 0 and "already on nvme" in out, err


def test_bind_refuses_a_mounted_disk(nvme, tmp_path):
    blk = nvme_disk(nvme)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ext2", "-o", "ro", blk, str(mnt)], check=True)
    try:
        rc, out, err = run_cli("bind", nvme)
        assert rc == 2 and f"mounted on {mnt}" in err and "--force" in err, err
        assert driver_of(nvme) == "nvme" and nvme not in state()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_e1000e_interface_up_is_refused_then_force_binds():
    bdf = find_pci(E1000E)
    assert driver_of(bdf) == "e1000e"
    nif = netdev_of(bdf)
    subprocess.run(["ip", "link", "set", nif, "up"], check=True)
    try:
        rc, out, err = run_cli("bind", bdf)
        assert rc == 2, (out, err)
        assert f"network interface {nif} is up" in err and "--force" in err
        assert driver_of(bdf) == "e1000e"
        rc, out, err = run_cli("bind", bdf, "--force")
        assert rc == 0 and driver_of(bdf) == "vfio-pci", err
        rc, out, err = run_cli("unbind", bdf)
        assert rc == 0 and driver_of(bdf) == "e1000e", err
    finally:
        if driver_of(bdf) != "e1000e":
            sysfs_bind(bdf, "e1000e")
        STATE.unlink(missing_ok=True)


def test_an_interface_with_an_address_is_refused_naming_the_address_and_route():
    """As dpdk-devbind: an interface that carries an address or a route is the host's; the
    refusal names both (the connected route the kernel adds for the address)."""
    bdf = find_pci(E1000E)
    assert driver_of(bdf) == "e1000e"
    nif = netdev_of(bdf)
    subprocess.run(["ip", "addr", "add", "10.9.9.1/24", "dev", nif], check=True)
    subprocess.run(["ip", "link", "set", nif, "up"], check=True)
    try:
        rc, out, err = run_cli("bind", bdf)
        assert rc == 2 and "Traceback" not in err, (out, err)
        assert f"network interface {nif} carries 10.9.9.1" in err, err
        assert "routes 10.9.9.0/24" in err and "--force" in err, err
        assert driver_of(bdf) == "e1000e"
    finally:
        subprocess.run(["ip", "addr", "flush", "dev", nif], check=True)
        subprocess.run(["ip", "link", "set", nif, "down"], check=True)


def test_ich9_group_member_is_refused_naming_the_members():
    sata, smbus, lpc = find_pci(ICH9_SATA), find_pci(ICH9_SMBUS), find_pci(ICH9_LPC)
    assert driver_of(smbus) == "i801_smbus"
    rc, out, err = run_cli("bind", sata)
    assert rc == 2, (out, err)
    assert f"{smbus} (i801_smbus)" in err and "--group" in err
    assert driver_of(sata) is None and driver_of(smbus) == "i801_smbus"
    rc, out, err = run_cli("bind", sata, "--force")  # --force never overrides the group check
    assert rc == 2 and "--group" in err
    rc, out, err = run_cli("bind", lpc)  # its group holds i801_smbus too
    assert rc == 2 and f"{smbus} (i801_smbus)" in err, err
    rc, out, err = run_cli("bind", "--group", lpc)  # the LPC bridge itself: only when forced
    assert rc == 2 and "bridge-class function" in err and "--force" in err, err
    assert driver_of(lpc) is None and driver_of(smbus) == "i801_smbus"


def test_group_bind_and_restore():
    sata, smbus = find_pci(ICH9_SATA), find_pci(ICH9_SMBUS)
    rc, out, err = run_cli("bind", "--group", sata, "--json")
    try:
        assert rc == 0, err
        got = {d["bdf"]: d for d in json.loads(out)["devices"]}
        assert set(got) == {sata, smbus}
        assert got[smbus]["original_driver"] == "i801_smbus"
        assert driver_of(sata) == driver_of(smbus) == "vfio-pci"
    finally:
        rc, out, err = run_cli("restore")
    assert rc == 0, err
    assert driver_of(smbus) == "i801_smbus" and driver_of(sata) is None
    assert state() == {}
    rc, out, err = run_cli("restore")
    assert rc == 0 and "nothing to restore" in out


def test_dry_run_changes_nothing(nvme):
    rc, out, err = run_cli("bind", nvme, "--dry-run")
    assert rc == 0 and "dry run" in out, err
    assert "driver_override" in err and "drivers_probe" in err
    assert driver_of(nvme) == "nvme" and state() == {}


# --- bad input: one line, exit 2, nothing changed ------------------------------------------------
def _clean(rc, out, err, needle):
    assert rc == 2 and "Traceback" not in err, (rc, out, err)
    first, second = err.strip().splitlines()[:2]
    assert first.startswith("error: ") and second.startswith("hint: ") and needle in err, err


def test_unbind_without_a_record_asks_for_the_driver(edu):
    _clean(*run_cli("unbind", edu), "no record of its original driver")
    assert driver_of(edu) == "vfio-pci"


def test_bind_bad_input(nvme):
    _clean(*run_cli("bind", "0000:00:1e.7"), "no PCI device")
    _clean(*run_cli("bind", "00:zz.0"), "not a PCI address")
    _clean(*run_cli("unbind", nvme, "--driver", "no-such-driver"), "no PCI driver named")
    _clean(*run_cli("bind", nvme, user=65534), "run as root")
    assert driver_of(nvme) == "nvme" and state() == {}

