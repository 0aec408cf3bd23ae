"""The lab: what the pytest plugin and the CLI share. Given a cell, it finds the QEMU build, builds the
image (through the store, so once across xdist workers and sessions), picks the accelerator, starts the
machine in a work folder, and boots it to a shell while recording when each milestone appeared.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.accel import ProbeKernel, choose_accel
from harness.deadline import Deadline
from harness.machine import Machine
from harness.net import Nic
from harness.qemu import QemuInstall, QemuNotFound
from harness.timeouts import scaled
from images.debian.fetch import DebianFetcher, FetchError
from images.debian.lock import DEFAULT_LOCK, LockError, Lockfile
from images.debian.mirror import MirrorNotFound
from images.recipes.minimal import MinimalImage, build_minimal
from images.recipes.qemu import pinned_qemu_prefix
from images.store import Store
from matrix.model import Cell
from matrix.profiles import PROFILES, spec_for

BOOT_BUDGET_TCG = 90.0  # seconds to the shell under TCG; a hang, not a performance gate
KERNEL_START = r"Linux version \S+"


class Unavailable(Exception):
    """Something a cell needs cannot be had here (a QEMU binary, packages): a skip, or an error in strict mode."""


@dataclass
class BootRecord:
    cell: str
    accel: str
    accel_reason: str
    qemu: str
    qemu_version: str
    milestones: dict[str, float] = field(default_factory=dict)  # seconds since QEMU started

    @property
    def time_to_ready(self) -> float | None:
        return self.milestones.get("ready")


class Lab:
    def __init__(self, store: Store | None = None, lock_path: Path = DEFAULT_LOCK):
        self.store = store or Store()
        self.lock_path = lock_path
        self._fetcher: DebianFetcher | None = None
        self._qemu: dict[str, QemuInstall] = {}
        self._images: dict[str, MinimalImage] = {}

    def fetcher(self) -> DebianFetcher:
        if self._fetcher is None:
            try:
                self._fetcher = DebianFetcher(self.store.root, Lockfile.load(self.lock_path))
            except LockError as error:
                raise Unavailable(str(error)) from error
        return self._fetcher

    def qemu(self, which: str) -> QemuInstall:
        if which not in self._qemu:
            if which == "host":
                install = QemuInstall.host()
            else:
                try:
                    install = QemuInstall.from_prefix("pinned", pinned_qemu_prefix(self.store, self.fetcher()))
                except (FetchError, MirrorNotFound) as error:
                    raise Unavailable(f"pinned QEMU could not be fetched: {error}") from error
            self._qemu[which] = install
        return self._qemu[which]

    def image(self, arch: str) -> MinimalImage:
        if arch not in self._images:
            try:
                self._images[arch] = build_minimal(self.store, self.fetcher(), arch)
            except (FetchError, MirrorNotFound) as error:
                raise Unavailable(f"{arch} kernel/busybox packages could not be fetched: {error}") from error
        return self._images[arch]

    def check(self, cell: Cell) -> None:
        """Raise Unavailable if this cell cannot run here, with the reason."""
        try:
            self.qemu(cell.qemu).version(cell.arch)
        except QemuNotFound as error:
            raise Unavailable(str(error)) from error
        self.image(cell.arch)

    def accel(self, cell: Cell) -> tuple[str, str]:
        probe = None
        if cell.arch == "x86_64":
            image = self.image("x86_64")
            profile = PROFILES[("x86_64", "seabios")]
            probe = ProbeKernel(
                image.kernel, image.initrd, f"console={profile.console} panic=-1", image.ready_marker,
                self.store.root.name + image.kernel.parent.parent.name,
            )
        return choose_accel(cell.arch, self.qemu(cell.qemu), self.store.root / "accel", cell.accel, probe)

    def machine(
        self, cell: Cell, workdir: Path, name: str = "vm", nics: tuple[Nic, ...] = ()
    ) -> tuple[Machine, BootRecord]:
        """A machine for `cell`, not yet started, and the record its boot will fill in."""
        self.check(cell)
        qemu = self.qemu(cell.qemu)
        accel, why = self.accel(cell)
        spec = spec_for(cell, self.image(cell.arch), accel, nics)
        record = BootRecord(cell.id, accel, why, qemu.name, qemu.version(cell.arch))
        return Machine(spec, qemu, workdir, name=name), record

    def boot_budget(self, cell: Cell, accel: str) -> float:
        return scaled(BOOT_BUDGET_TCG, cell.arch, accel)

    def boot(self, machine: Machine, record: BootRecord, deadline: Deadline) -> BootRecord:
        """Start (if needed) and wait for kernel start, the image's marker and a shell that answers."""
        if machine.process is None:
            machine.start()
        image_marker = self.image(machine.spec.arch).ready_marker
        console = machine.console
        found = console.expect([KERNEL_START, image_marker], deadline, what="kernel start or readiness marker")
        if found.index == 0:
            record.milestones["kernel"] = round(time.monotonic() - machine.t0, 3)
            console.expect(image_marker, deadline, what="readiness marker")
        record.milestones["init-ready"] = round(time.monotonic() - machine.t0, 3)
        console.wait_shell(deadline)
        record.milestones["ready"] = round(time.monotonic() - machine.t0, 3)
        (machine.workdir / "boot.json").write_text(json.dumps(asdict(record), indent=2) + "\n")
        return record
