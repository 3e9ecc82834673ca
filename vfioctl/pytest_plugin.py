"""vfioctl as pytest's fixture layer for hardware CI (a ``pytest11`` entry point: installed, it
is active; without ``--vfio-device`` it binds nothing and runs no device test).

Options (each also from the environment, for runners that cannot change the command line):
``--vfio-device SELECTOR`` (repeatable; a PCI address, vfioN, or VENDOR:DEVICE;
$VFIOCTL_TEST_DEVICES, comma-separated), ``--vfio-iommu-mode MODE`` (repeatable; default auto;
$VFIOCTL_TEST_IOMMU_MODES), ``--vfio-vf-token UUID`` ($VFIOCTL_VF_TOKEN), ``--vfio-probe`` and
``--vfio-selftest`` (one test item per check of ``vfioctl probe`` / ``selftest``, so the
kernel's and the device's answers are rows of ``--junitxml``).

Fixtures: ``vfio_device`` (the selected device as a PciDevice, bound to vfio-pci for the test
session; its original driver restored at the end whatever happened; after a kill -9,
``vfioctl restore`` finishes the job from the state file), ``vfio_iommu_mode`` and
``vfio_session`` (an open session per test), parametrised over devices x modes with ids such as
``test_x[0000:00:0a.0-iommufd]``. Marker ``@pytest.mark.vfio(ids=..., modes=[...],
needs=[...])`` (needs: ``msix``, ``msi``, ``dma_driver``, ``sriov``): a test runs only on
matching devices and modes; with none, it is deselected and the reason printed in the summary.
"""
from __future__ import annotations

import os
from collections import Counter

import pytest

ENV_DEVICES = "VFIOCTL_TEST_DEVICES"
ENV_MODES = "VFIOCTL_TEST_IOMMU_MODES"
DEVICE_FIXTURES = {"vfio_device", "vfio_session", "vfio_iommu_mode"}
NEEDS = ("msix", "msi", "dma_driver", "sriov")
PCI_CAP_MSI, PCI_CAP_MSIX = 0x05, 0x11


def pytest_addoption(parser):
    g = parser.getgroup("vfioctl", "VFIO devices (vfioctl)")
    g.addoption("--vfio-device", action="append", default=[], metavar="SELECTOR",
                help="a device to test: PCI address, vfioN or VENDOR:DEVICE; repeatable "
                     f"(env {ENV_DEVICES}, comma-separated)")
    g.addoption("--vfio-iommu-mode", action="append", default=[], metavar="MODE",
                help=f"IOMMU mode to test in; repeatable; default auto (env {ENV_MODES})")
    g.addoption("--vfio-vf-token", default=None, metavar="UUID",
                help="VF token for VFs whose PF is on vfio-pci (env VFIOCTL_VF_TOKEN)")
    g.addoption("--vfio-probe", action="store_true",
                help="add one test per `vfioctl probe` check of each device and mode")
    g.addoption("--vfio-selftest", action="store_true",
                help="add one test per `vfioctl selftest` check of each device and mode")
    g.addoption("--vfio-selftest-seconds", type=float, default=0.5, metavar="S",
                help="how long the selftest's memcpy_storm runs (default 0.5)")


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


class VfioCheckFailed(Exception):
    pass


class VfioCheckItem(pytest.Item):
    """One row of a probe or selftest report."""

    def __init__(self, *, check=None, error=None, **kw):
        super().__init__(**kw)
        self.check = check
        self.error = error

    def runtest(self):
        if self.error is not None:
            raise VfioCheckFailed(self.error)
        if not self.check.ok:
            raise VfioCheckFailed(f"expected {self.check.expected}, observed "
                                  f"{self.check.observed}")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, VfioCheckFailed):
            return f"{self.name}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return "vfioctl", None, self.name


class VfioPlugin:
    def __init__(self, config):
        opt = config.option
        self.config = config
        self.selectors = opt.vfio_device or _split(os.environ.get(ENV_DEVICES))
        self.modes = opt.vfio_iommu_mode or _split(os.environ.get(ENV_MODES)) or ["auto"]
        self.vf_token = opt.vfio_vf_token or os.environ.get("VFIOCTL_VF_TOKEN")
        self._devices = None
        self.bound: dict[str, bool] = {}  # bdf -> whether this run moved it to vfio-pci
        self.reasons: Counter = Counter()
        self.unavailable: dict[str, str] = {}  # mode asked for -> why this kernel lacks it

    # --- devices ------------------------------------------------------------------------------
    def devices(self):
        if self._devices is None:
            from .discovery import select_devices
            from .errors import VfioctlError

            try:
                self._devices = select_devices(self.selectors) if self.selectors else []
            except VfioctlError as exc:
                raise pytest.UsageError(f"--vfio-device: {exc.message} ({exc.hint})") from None
        return self._devices

    def ensure_bound(self, dev) -> None:
        if dev.bdf in self.bound:
            return
        from .binding import VFIO_DRIVER, bind
        from .errors import VfioctlError

        if dev.driver == VFIO_DRIVER:
            self.bound[dev.bdf] = False
            return
        try:
            results = bind([dev])
        except VfioctlError as exc:
            pytest.exit(f"vfioctl: cannot bind {dev.bdf} to vfio-pci: {exc.message} "
                        f"({exc.hint})", returncode=4)
        for r in results:
            self.bound[r.bdf] = r.changed

    def restore(self) -> list[str]:
        """Return every device this run bound to its original driver (reverse order)."""
        from .binding import unbind
        from .pci import PciDevice

        said = []
        for bdf, changed in reversed(list(self.bound.items())):
            if changed:
                unbind([PciDevice(bdf)])
                said.append(bdf)
        self.bound.clear()
        return said

    # --- what a test wants --------------------------------------------------------------------
    def modes_for(self, dev) -> list[str]:
        """The concrete modes to run on ``dev`` (auto resolved), each once."""
        from .backend import choose_mode
        from .errors import VfioctlError

        out = []
        for m in self.modes:
            try:
                mode = choose_mode(None if m == "auto" else m, dev)
            except VfioctlError as exc:  # a mode this kernel lacks: said once, in the summary
                self.unavailable[m] = exc.message
                continue
            if mode not in out:
                out.append(mode)
        return out

    def cases(self, marker) -> tuple[list, str]:
        want_ids = marker.kwargs.get("ids") if marker else None
        want_modes = marker.kwargs.get("modes") if marker else None
        needs = list(marker.kwargs.get("needs", ())) if marker else []
        if isinstance(want_ids, str):
            want_ids = [want_ids]
        bad = [n for n in needs if n not in NEEDS]
        if bad:
            raise pytest.UsageError(f"@pytest.mark.vfio needs={bad}: known are {list(NEEDS)}")
        devices = self.devices()
        if not devices:
            return [], "no --vfio-device selected"
        cases, why = [], []
        for d in devices:
            if want_ids and d.ids not in want_ids:
                why.append(f"{d.bdf} is {d.ids}, not {'/'.join(want_ids)}")
                continue
            lacking = [n for n in needs if not _has(d, n)]
            if lacking:
                why.append(f"{d.bdf} lacks {', '.join(lacking)}")
                continue
            modes = self.modes_for(d)
            if want_modes:
                modes = [m for m in modes if m in want_modes]
            if not modes:
                why.append(f"no selected mode of {d.bdf} is one of {want_modes or self.modes}")
            cases += [(d, m) for m in modes]
        return cases, "; ".join(why)


def _has(dev, need: str) -> bool:
    if need == "dma_driver":
        from .drivers import driver_class

        return driver_class(dev.vendor, dev.device) is not None
    if need == "sriov":
        return bool(dev.sriov_totalvfs)
    return (PCI_CAP_MSIX if need == "msix" else PCI_CAP_MSI) in _caps(dev.config())


def _caps(cfg: bytes) -> set[int]:
    """Capability IDs of a config space's standard list (the first 256 bytes)."""
    out, ptr, seen = set(), cfg[0x34] & ~3 if len(cfg) > 0x34 and cfg[6] & 0x10 else 0, set()
    while ptr and ptr + 1 < len(cfg) and ptr not in seen:
        seen.add(ptr)
        out.add(cfg[ptr])
        ptr = cfg[ptr + 1] & ~3
    return out


# --- hooks --------------------------------------------------------------------------------------
def pytest_configure(config):
    config.addinivalue_line(
        "markers", "vfio(ids=None, modes=None, needs=()): run only on selected VFIO devices "
                   "with these VENDOR:DEVICE ids, in these IOMMU modes, having these features "
                   f"({', '.join(NEEDS)})")
    config.addinivalue_line("markers", "vfio_none(why): internal to vfioctl's plugin: no device "
                                       "matched this test")
    config._vfioctl = VfioPlugin(config)


def pytest_generate_tests(metafunc):
    if not DEVICE_FIXTURES & set(metafunc.fixturenames):
        return
    plugin = metafunc.config._vfioctl
    cases, why = plugin.cases(metafunc.definition.get_closest_marker("vfio"))
    if cases:
        metafunc.parametrize("_vfio_case", cases, ids=[f"{d.bdf}-{m}" for d, m in cases])
    else:
        metafunc.parametrize("_vfio_case", [pytest.param(None, marks=pytest.mark.vfio_none(why))],
                             ids=["no-vfio-device"])


def pytest_collection_modifyitems(session, config, items):
    plugin = config._vfioctl
    keep, drop = [], []
    for item in items:
        m = item.get_closest_marker("vfio_none")
        if m is not None:
            drop.append(item)
            plugin.reasons[m.args[0]] += 1
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if config.option.vfio_probe or config.option.vfio_selftest:
        items.extend(_report_items(session, plugin))


def _report_items(session, plugin) -> list[VfioCheckItem]:
    from .errors import VfioctlError

    out = []
    for d in plugin.devices():
        plugin.ensure_bound(d)
        for mode in plugin.modes_for(d):
            runs = []
            if plugin.config.option.vfio_probe:
                runs.append(("probe", lambda d=d, mode=mode: _probe(d, mode, plugin.vf_token)))
            if plugin.config.option.vfio_selftest:
                runs.append(("selftest", lambda d=d, mode=mode: _selftest(
                    d, mode, plugin.vf_token, plugin.config.option.vfio_selftest_seconds)))
            for what, run in runs:
                prefix = f"vfio_{what}[{d.bdf}-{mode}]"
                try:
                    report = run()
                except VfioctlError as exc:
                    out.append(VfioCheckItem.from_parent(session, name=prefix,
                                                         error=f"{exc.message} ({exc.hint})"))
                    continue
                for c in report.checks:
                    out.append(VfioCheckItem.from_parent(session, name=f"{prefix}::{c.name}",
                                                         check=c))
    return out


def _probe(dev, mode, token):
    from .probe import probe

    return probe(dev, mode, vf_token=token)


def _selftest(dev, mode, token, seconds):
    from .selftest import run
    from .session import open as open_session

    with open_session(dev, iommu_mode=mode, vf_token=token) as s:
        return run(s, seconds=seconds)


def pytest_sessionfinish(session, exitstatus):
    plugin = getattr(session.config, "_vfioctl", None)
    if plugin is not None and plugin.bound:
        done = plugin.restore()
        if done:
            tr = session.config.pluginmanager.get_plugin("terminalreporter")
            if tr is not None:
                tr.write_line(f"vfioctl: returned {', '.join(done)} to their original drivers")


def pytest_terminal_summary(terminalreporter):
    plugin = getattr(terminalreporter.config, "_vfioctl", None)
    if plugin is None:
        return
    for why, n in plugin.reasons.items():
        terminalreporter.write_line(f"vfioctl: deselected {n} test(s): {why}")
    for m, why in plugin.unavailable.items():
        terminalreporter.write_line(f"vfioctl: IOMMU mode {m} not run: {why}")


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture
def vfio_device(request, _vfio_case):
    """The selected device (a vfioctl PciDevice), bound to vfio-pci for the test session."""
    dev, _ = _vfio_case
    request.config._vfioctl.ensure_bound(dev)
    return dev


@pytest.fixture
def vfio_iommu_mode(_vfio_case) -> str:
    return _vfio_case[1]


@pytest.fixture
def vfio_session(request, vfio_device, _vfio_case):
    """An open vfioctl Session of the device in the mode, closed after the test."""
    from .session import open as open_session

    with open_session(vfio_device, iommu_mode=_vfio_case[1],
                      vf_token=request.config._vfioctl.vf_token) as s:
        yield s
