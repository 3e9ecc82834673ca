"""CLI bad input on any machine: one `error:` line, a `hint:` line, exit 2, no traceback."""
import json
import subprocess
import sys

import pytest


def cli(*args):
    p = subprocess.run([sys.executable, "-m", "vfioctl", *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("args,needle", [
    (("probe", "00:zz.0"), "is not a PCI address"),
    (("read", "1:2:3:4.5", "bar0", "0"), "is not a PCI address"),
    (("info", "/dev/sda"), "is not a VFIO device cdev path"),
    (("read", "vfio9999", "bar0", "0"), "no VFIO device cdev vfio9999"),
    (("read", "0000:7f:1f.7", "bar0", "0"), "no PCI device 0000:7f:1f.7"),
    (("list", "-d", "xyz"), "is not VENDOR:DEVICE"),
    (("bind", "0000:7f:1f.7"), "no PCI device"),
    (("doctor", "0000:7f:1f.7"), "no PCI device"),
    (("read", "0000:7f:1f.7", "bar0", "0", "--count", "0"), "--count 0 is not positive"),
    (("read", "0000:7f:1f.7", "bar0", "zz"), "offset 'zz' is not a number"),
    (("write", "0000:7f:1f.7", "bar0", "0", "0xfg"), "value '0xfg' is not a number"),
    # the region's name is checked before the device is looked for
    (("read", "0000:7f:1f.7", "bar9", "0"), "unknown region 'bar9'"),
    (("write", "0000:7f:1f.7", "flash", "0", "1"), "unknown region 'flash'"),
    (("dump", "0000:7f:1f.7", "bar9"), "unknown region 'bar9'"),
    # the mode is checked before the device is looked for
    (("info", "0000:7f:1f.7", "--iommu-mode", "type3"), "unknown IOMMU mode 'type3'"),
    (("read", "0000:7f:1f.7", "bar0", "0", "--iommu-mode", "type3"),
     "unknown IOMMU mode 'type3'"),
    (("selftest", "0000:7f:1f.7", "--iommu-mode", "type3"), "unknown IOMMU mode 'type3'"),
    (("selftest", "0000:7f:1f.7"), "no PCI device 0000:7f:1f.7"),
])
def test_bad_input_is_one_line_with_a_hint(args, needle):
    rc, out, err = cli(*args)
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert needle in lines[0]


def test_a_mode_from_the_environment_that_is_no_mode_is_named_with_the_variable(monkeypatch):
    monkeypatch.setenv("VFIOCTL_IOMMU_MODE", "type3")
    rc, out, err = cli("info", "0000:7f:1f.7")
    assert rc == 2 and "Traceback" not in err, (rc, err)
    assert err.splitlines() == [
        "error: unknown IOMMU mode 'type3' (from $VFIOCTL_IOMMU_MODE)",
        "hint: use one of: auto, iommufd, iommufd_compat_type1, iommufd_compat_type1v2, "
        "vfio_type1_iommu, vfio_type1v2_iommu"]


@pytest.mark.parametrize("command", [("bind", "0000:7f:1f.7"), ("unbind", "0000:7f:1f.7"),
                                     ("restore",)])
@pytest.mark.parametrize("value,needle", [("-3", "-3.0 is not in the range x>=0."),
                                          ("nan", "'nan' is not a number of seconds"),
                                          ("soon", "'soon' is not a number of seconds")])
def test_a_timeout_that_is_no_wait_is_refused_before_anything_is_done(command, value, needle):
    rc, out, err = cli(*command, "--timeout", value)
    assert rc == 2 and "Traceback" not in err, (rc, err)
    assert err.splitlines() == [f"error: Invalid value for '--timeout': {needle}",
                                f"hint: `vfioctl {command[0]} --help` shows the arguments and "
                                "options"]


@pytest.mark.parametrize("args", [("write", "0000:7f:1f.7", "bar0", "4", "-1"),
                                  ("read", "0000:7f:1f.7", "bar0", "-0x10")])
def test_a_negative_number_is_told_that_offsets_and_values_are_unsigned(args):
    rc, out, err = cli(*args)
    assert rc == 2 and "Traceback" not in err, (rc, err)
    assert err.splitlines() == [
        # click reads -0x10 as the short options -0, -x, ...: it names the first
        f"error: No such option '{args[-1][:2]}'.",
        "hint: offsets and values are unsigned: -1 in 4 bytes is 0xffffffff (a word that "
        "starts with - is read as an option)"]


def test_json_errors_are_json():
    rc, out, err = cli("read", "00:zz.0", "bar0", "0", "--json")
    assert rc == 2 and err == ""
    e = json.loads(out)
    assert e["error"] == "UsageError" and "PCI address" in e["message"] and e["hint"]


def test_usage_errors_from_click_exit_2():
    rc, out, err = cli("read")
    assert rc == 2 and "Missing argument" in err
    rc, out, err = cli("read", "00:01.0", "bar0", "0", "--width", "3")
    assert rc == 2 and "'3' is not one of" in err


@pytest.mark.parametrize("args,needle", [
    (("read", "--json"), "Missing argument 'DEVICE'"),
    (("read", "00:01.0", "bar0", "0", "--width", "3", "--json"), "'3' is not one of"),
    (("--json", "read", "00:01.0", "bar0", "0", "--width", "3"), "'3' is not one of"),
    (("--json", "bind", "--no-such-flag", "00:01.0"), "--no-such-flag"),
    (("--json", "no-such-command"), "no-such-command"),
    (("--json",), "Missing command"),
])
def test_click_usage_errors_are_json_when_json_was_asked_for(args, needle):
    rc, out, err = cli(*args)
    assert rc == 2 and err == "", (rc, out, err)
    e = json.loads(out)
    assert e["error"] == "UsageError" and needle in e["message"] and "--help" in e["hint"], e


def test_json_before_the_command_is_the_commands_json():
    rc, out, err = cli("--json", "read", "00:zz.0", "bar0", "0")
    assert rc == 2 and err == "", (rc, out, err)
    assert "PCI address" in json.loads(out)["message"]
    # after a `--` it is not vfioctl's: `run` passes it to the script, and errors stay text
    rc, out, err = cli("run", "/no/such/script.py", "00:01.0", "--", "--json")
    assert rc == 2 and out == "" and err.startswith("error: no script /no/such/script.py"), err
    # a success prints the same JSON either way
    assert json.loads(cli("--json", "list")[1]) == json.loads(cli("list", "--json")[1])
