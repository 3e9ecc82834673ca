"""Running vfioctl without root: a udev rules file that gives a group the VFIO and iommufd
nodes, and what RLIMIT_MEMLOCK must allow. Binding (sysfs writes) stays root's."""
from __future__ import annotations

import grp
import os
import pwd
import re
import resource
from importlib import resources

from .errors import UsageError

DEFAULT_GROUP = "vfio"
RULES_NAME = "70-vfioctl.rules"


def udev_rules(group: str = DEFAULT_GROUP) -> str:
    """The rules file shipped with the package, for ``group``."""
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", group):
        raise UsageError(f"{group!r} is not a group name",
                         hint="use a name such as vfio: lower-case letters, digits, _ and -")
    text = resources.files("vfioctl").joinpath("data", RULES_NAME).read_text()
    return text.replace("@GROUP@", group)


def _fmt(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else f"{limit // 1024} KiB"


def memlock() -> dict:
    """The caller's RLIMIT_MEMLOCK and what to set. DMA mappings pin their pages and are
    charged to it (iommufd and VFIO's type1 both), so the limit bounds how much a user can map
    at once; vfioctl's own selftest maps under 64 KiB."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return {
        "soft": None if soft == resource.RLIM_INFINITY else soft,
        "hard": None if hard == resource.RLIM_INFINITY else hard,
        "text": f"RLIMIT_MEMLOCK is {_fmt(soft)} (hard {_fmt(hard)}); every byte mapped for DMA "
                "counts against it",
        "limits_conf": "@{group}  -  memlock  unlimited   "
                       "# /etc/security/limits.d/vfioctl.conf (login sessions)",
        "systemd": "LimitMEMLOCK=infinity   # in the [Service] of a runner's unit",
    }


def _gid(group: str) -> int | None:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def _who() -> str:
    """The user to add to the group: the one who ran sudo, else the caller if not root, else
    the placeholder USER (root itself needs no group)."""
    if os.geteuid() == 0:
        return os.environ.get("SUDO_USER") or "USER"
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return "USER"


def setup(group: str = DEFAULT_GROUP) -> dict:
    """The rules for ``group``, the memlock advice, and the steps to install them. ``gid`` is
    None where this host has no such group: udev ignores a rule naming an unknown group (it
    only logs it), so creating the group comes first among the steps."""
    m = memlock()
    rules = udev_rules(group)
    gid = _gid(group)
    steps = [] if gid is not None else [f"groupadd --system {group}   # no such group here yet"]
    steps += [f"usermod -aG {group} {_who()}   # then log in again",
              f"install the rules as /etc/udev/rules.d/{RULES_NAME}, then "
              "udevadm control --reload && udevadm trigger",
              "raise RLIMIT_MEMLOCK for the group (see memlock)"]
    return {"group": group, "gid": gid, "rules_file": f"/etc/udev/rules.d/{RULES_NAME}",
            "rules": rules, "memlock": {**m, "limits_conf": m["limits_conf"].format(group=group)},
            "steps": steps}
