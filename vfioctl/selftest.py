"""``vfioctl selftest``: the device itself proves DMA through the IOMMU and its interrupt.

The checks follow the kernel's ``vfio_pci_driver_test`` (memcpy_success,
memcpy_from_unmapped_iova, memcpy_to_unmapped_iova, send_msi, mix_and_match, memcpy_storm) and
observe more than it asserts: the destination's bytes, the unmapped page's bytes, the interrupt
count, and the IOMMU's fault report in the kernel log where it can be read.

The "unmapped" IOVA is one where a page of known random data *was* mapped a moment before: a
DMA the IOMMU let through (a stale IOTLB entry, a mapping left behind) would read that data or
overwrite it, so each unmapped check can fail for the reason it exists.
"""
from __future__ import annotations

import errno
import mmap
import os
import random
import time
from dataclasses import asdict, dataclass, field

from .iova import PAGE_SIZE


@dataclass(frozen=True)
class Check:
    name: str
    expected: str
    observed: str
    ok: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SelftestReport:
    device: str
    driver: str
    iommu_mode: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    storm_mb_per_s: float | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict:
        return {"device": self.device, "driver": self.driver, "iommu_mode": self.iommu_mode,
                "ok": self.ok, "notes": self.notes, "storm_mb_per_s": self.storm_mb_per_s,
                "checks": [c.to_dict() for c in self.checks]}


class KernelLog:
    """The kernel log's records after a point, to find an IOMMU fault report. ``readable`` is
    False without the right to read /dev/kmsg (root or CAP_SYSLOG, or dmesg_restrict=0)."""

    def __init__(self):
        self.readable = True
        self.mark = self._last_seq()

    def _records(self) -> list[tuple[int, str]]:
        try:
            fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            self.readable = False
            return []
        out = []
        try:
            while True:
                try:
                    rec = os.read(fd, 8192).decode(errors="replace")
                except BlockingIOError:
                    break
                except OSError as exc:  # EPIPE: records overwritten while reading
                    if exc.errno != errno.EPIPE:
                        self.readable = False
                        break
                    continue
                head, _, text = rec.partition(";")
                fields = head.split(",")
                if len(fields) >= 2 and fields[1].isdigit():
                    out.append((int(fields[1]), text.strip()))
        finally:
            os.close(fd)
        return out

    def _last_seq(self) -> int:
        return max((seq for seq, _ in self._records()), default=-1)

    def fault(self, iova: int, timeout: float = 1.0) -> str:
        """How the kernel log reports a fault at ``iova`` since the last call."""
        needle = f"fault addr {iova:#x}"
        deadline = time.monotonic() + timeout
        while True:
            recs = [(s, t) for s, t in self._records() if s > self.mark]
            hit = next((t for _, t in recs if needle in t), None)
            if hit or time.monotonic() > deadline or not self.readable:
                break
            time.sleep(0.05)
        self.mark = max([self.mark] + [s for s, _ in recs])
        if not self.readable:
            return "kernel log not readable here (needs root or CAP_SYSLOG)"
        if hit:
            return f"kernel log: {hit[:120]}"
        return (f"no '{needle}' in the kernel log (intel-iommu rate-limits fault reports; "
                "other IOMMUs word them differently)")


class _Run:
    def __init__(self, session, seconds: float, rng: random.Random):
        self.s = session
        self.drv = session.driver()
        self.seconds = seconds
        self.rng = rng
        d = self.drv
        self.size = max(d.min_chunk, min(4 * d.max_chunk, 16 * PAGE_SIZE))
        length = -(-self.size // PAGE_SIZE) * PAGE_SIZE
        self.src = self.dst = self.victim = None
        try:
            self.src = session.dma_alloc(length, limit=d.dma_limit)
            self.dst = session.dma_alloc(length, limit=d.dma_limit)
            # the page that will be "unmapped": mapped with known data, then unmapped
            self.victim = mmap.mmap(-1, length, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
            self.victim_data = rng.randbytes(length)
            self.victim[:] = self.victim_data
            m = session.dma.map(self.victim, limit=d.dma_limit)
            self.unmapped = m.iova
            session.dma.unmap(m.iova)
        except BaseException:
            self.close()
            raise
        self.log = KernelLog()
        self.mb_per_s = 0.0

    def close(self) -> None:
        for buf in (self.dst, self.src):
            if buf is not None:
                self.s.dma_free(buf)
        if self.victim is not None:
            try:
                self.victim.close()
            except BufferError:  # still mapped (an unmap failed): the session's close frees it
                pass

    # --- pieces -------------------------------------------------------------------------------
    def msis(self, settle: float = 0.0) -> int:
        if settle:
            time.sleep(settle)
        return self.drv.irq.poll(0)

    def copy_ok(self, size: int) -> tuple[bool, str]:
        data = self.rng.randbytes(size)
        self.src.write(data)
        self.dst.write(b"\xa5" * size)
        res = self.drv.memcpy(self.src.iova, self.dst.iova, size)
        got = self.dst.read(0, size)
        if not res.completed:
            return False, f"{size} B: no completion"
        if got != data:
            bad = next(i for i in range(size) if got[i] != data[i])
            return False, f"{size} B: differs from byte {bad}"
        return True, f"{size} B intact"

    def from_unmapped(self) -> tuple[bool, str]:
        """Passes if none of the unmapped page's former data reaches the destination. Whether
        the destination is written at all is the device's business, and is reported: QEMU's
        edu and igb copy on what their failed read returned (zeros), and igb then reports the
        copy complete; the kernel's own test ignores the copy's outcome for the same reason."""
        n = min(self.size, self.drv.max_chunk)
        self.dst.write(b"\x5a" * n)
        res = self.drv.memcpy(self.unmapped, self.dst.iova, n)
        got = self.dst.read(0, n)
        ok = got != self.victim_data[:n]
        dest = ("unchanged" if got == b"\x5a" * n else
                "zero-filled" if got == bytes(n) else "written")
        done = ("completed" if res.completed else
                "no completion" + (", device reset" if res.recovered else ""))
        return ok, (("none of the unmapped page's data arrived" if ok else
                     "the unmapped page's data arrived")
                    + f", destination {dest}, copy {done}")

    def to_unmapped(self) -> tuple[bool, str]:
        n = min(self.size, self.drv.max_chunk)
        self.src.write(self.rng.randbytes(n))
        self.drv.memcpy(self.src.iova, self.unmapped, n)
        intact = self.victim[:] == self.victim_data
        return intact, ("the unmapped page is unchanged" if intact else
                        "the unmapped page was written")

    def one_msi(self) -> tuple[bool, str]:
        self.msis()
        self.drv.send_msi()
        n = self.drv.irq.wait(0, timeout=2.0)
        extra = self.msis(settle=0.05)
        return n == 1 and extra == 0, f"{n + extra} interrupt(s)"

    def after_fault(self, ok: bool, text: str, iova: int) -> Check:
        no_msi = self.msis(settle=0.02) == 0
        fault = self.log.fault(iova)
        works, how = self.copy_ok(min(self.size, self.drv.max_chunk))
        observed = (f"{text}; {'no' if no_msi else 'an'} interrupt; "
                    f"{'then a copy succeeded' if works else 'then a copy failed: ' + how}; "
                    f"{fault}")
        return ok and no_msi and works, observed

    # --- the checks ---------------------------------------------------------------------------
    def checks(self):
        d = self.drv
        sizes = sorted({d.min_chunk, max(d.min_chunk, d.max_chunk // 2 + 3), d.max_chunk,
                        self.size})
        results = [self.copy_ok(n) for n in sizes]
        no_msi = self.msis(settle=0.02) == 0
        yield Check("memcpy_success",
                    f"sizes {', '.join(map(str, sizes))} B copied intact, no interrupt",
                    "; ".join(t for _, t in results) + ("; no interrupt" if no_msi else
                                                        "; an interrupt"),
                    all(ok for ok, _ in results) and no_msi)

        ok, text = self.from_unmapped()
        ok, observed = self.after_fault(ok, text, self.unmapped)
        yield Check("memcpy_from_unmapped_iova", "none of the unmapped page's data in the "
                    "destination, no interrupt, device works after", observed, ok)

        ok, text = self.to_unmapped()
        ok, observed = self.after_fault(ok, text, self.unmapped)
        yield Check("memcpy_to_unmapped_iova",
                    "the unmapped page unchanged, no interrupt, device works after",
                    observed, ok)

        ok, text = self.one_msi()
        yield Check("send_msi", "1 interrupt", text, ok)

        rounds, bad = 3, []
        for i in range(rounds):
            for what, (ok, text) in (("copy", self.copy_ok(self.size)),
                                     ("from unmapped", self.from_unmapped()),
                                     ("msi", self.one_msi())):
                if not ok:
                    bad.append(f"round {i + 1} {what}: {text}")
        yield Check("mix_and_match",
                    f"{rounds} rounds of copy, copy from unmapped, interrupt: all as expected",
                    "; ".join(bad) or f"{rounds} rounds as expected", not bad)

        yield self.storm()

    def storm(self) -> Check:
        d = self.drv
        n, count = d.max_chunk, d.max_count
        copies = 0
        bad = None
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.seconds or copies == 0:
            data = self.rng.randbytes(n)
            self.src.write(data)
            self.dst.write(b"\xa5" * n)
            d.memcpy_start(self.src.iova, self.dst.iova, n, count)
            res = d.memcpy_wait(timeout=max(1.0, self.seconds))
            if not res.completed or self.dst.read(0, n) != data:
                bad = "no completion" if not res.completed else "data differs"
                break
            copies += count
        elapsed = time.monotonic() - t0
        no_msi = self.msis(settle=0.02) == 0
        self.mb_per_s = copies * n / elapsed / 1e6
        observed = (f"{copies} copies of {n} B in {elapsed:.2f} s ({self.mb_per_s:.2f} MB/s)"
                    + (f"; {bad}" if bad else "") + ("" if no_msi else "; an interrupt"))
        return Check("memcpy_storm", f"copies of {n} B for {self.seconds:g} s, each batch "
                                     "verified, no interrupt", observed, not bad and no_msi)


def check_device(spec: str, iommu_mode: str | None = None):
    """What a self-test asks before it opens a session: the mode is one (as a session asks
    first), the device SPEC names exists and a driver here can drive it. Returns its PciDevice.
    A device with no driver is told so whatever it is bound to, not first to be bound to
    vfio-pci only to hear then that no driver can drive it."""
    from .backend import requested_mode
    from .drivers import require_driver
    from .pci import resolve

    requested_mode(iommu_mode)
    pci = resolve(spec)
    require_driver(pci)
    return pci


def run(session, *, seconds: float = 1.0, seed: int | None = None) -> SelftestReport:
    """Run the checks on an open session's device through its DMA driver
    (``session.driver()``). The DMA buffers it maps are unmapped before it returns."""
    rng = random.Random(seed)
    r = _Run(session, seconds, rng)
    report = SelftestReport(session.pci.bdf, r.drv.name, session.iommu_mode)
    try:
        for check in r.checks():
            report.checks.append(check)
        report.storm_mb_per_s = round(r.mb_per_s, 3)
        if not r.log.readable:
            report.notes.append("the kernel log is not readable: IOMMU fault reports not seen")
    finally:
        r.close()
    return report
