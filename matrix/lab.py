"""The lab: what the pytest plugin and the CLI share. Given a cell, it finds the QEMU build, builds the
images, the stick and the firmware set (through the store, so once across xdist workers and sessions),
picks the accelerator, starts the machine in a work folder with a boot timeline, and boots it to a shell.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from arches import NAMES
from harness.accel import ProbeKernel, choose_accel
from harness.deadline import Deadline
from harness.errors import MachineError
from harness.machine import Machine
from harness.net import Nic
from harness.qemu import QemuInstall, QemuNotFound
from harness.spec import MachineSpec, machine_args, pflash_args
from harness.timeline import Timeline
from harness.timeouts import scaled
from images.debian.fetch import DebianFetcher, FetchError, Moved
from images.debian.lock import (
    LockError,
    Lockfile,
    busybox_set,
    go_set,
    kernel_set,
    lock_path,
    qemu_set,
    shell_set,
)
from images.debian.mirror import MirrorNotFound
from images.recipes.firmware import FirmwareMissing, FirmwareSet, firmware_set
from images.recipes.gosource import GoSourceImage, build_go_root, build_gosource_image, build_programs, build_stage1
from images.recipes.minimal import MinimalImage, build_minimal
from images.recipes.qemu import pinned_qemu_prefix
from images.recipes.stick import StickError, build_stick
from images.store import Store
from matrix.history import configuration_hash
from matrix.model import DEFAULT_FIRMWARE_SET, Cell
from matrix.profiles import CONSOLE, TIMELINE_PHASES, BootMedia, needs_firmware_set, spec_for

BOOT_BUDGET_TCG = 120.0  # seconds to the shell under TCG (UEFI on aarch64 is the slowest); a hang, not a gate
ARCHES = NAMES


class Unavailable(Exception):
    """Something a cell needs cannot be had here (a QEMU binary or capability, packages, a firmware):
    a skip, or an error in strict mode."""


@dataclass
class BootRecord:
    cell: str
    accel: str
    accel_reason: str
    qemu: str
    qemu_version: str
    firmware_set: str | None
    firmware_versions: dict[str, str]
    milestones: dict[str, float] = field(default_factory=dict)  # seconds since QEMU started
    # The Debian packages this boot used (kernel, busybox, QEMU, ... : name -> version), and any that
    # differ from the lock because locked files were gone and their set was re-resolved ("old -> new").
    packages: dict[str, str] = field(default_factory=dict)
    package_drift: list[str] = field(default_factory=list)
    config: str = ""  # configuration_hash() of what this boot measures: history rows are compared by it

    @property
    def time_to_ready(self) -> float | None:
        return self.milestones.get("ready")


@dataclass
class BootOutcome:
    record: BootRecord
    passed: bool
    reason: str
    workdir: Path


def configuration(cell: Cell, spec: MachineSpec, record: BootRecord, booted: bool) -> str:
    """The configuration hash of a boot: every cell field, the machine as it will start (after any
    customisation), QEMU build, firmware and package versions, and whether it is booted to a shell."""
    return configuration_hash({
        "cell": cell.model_dump(), "spec": spec, "qemu": [record.qemu, record.qemu_version],
        "firmware": [record.firmware_set, record.firmware_versions], "packages": record.packages, "booted": booted,
    })


class Lab:
    def __init__(self, store: Store | None = None, locked: bool | None = None):
        """`locked`: a locked package that is gone from the mirror is an error (LockDrift), instead of
        re-resolving its set; None reads BOOTMATRIX_LOCKED."""
        self.store = store or Store()
        self.locked = locked
        self._fetchers: dict[str, DebianFetcher] = {}
        self._qemu: dict[str, QemuInstall] = {}
        self._images: dict[str, MinimalImage] = {}
        self._firmware: dict[str, FirmwareSet] = {}
        self._stick: Path | None = None
        self._gosource: GoSourceImage | None = None

    def fetcher(self, suite: str = DEFAULT_FIRMWARE_SET) -> DebianFetcher:
        if suite not in self._fetchers:
            try:
                lock = Lockfile.load(lock_path(suite))
                self._fetchers[suite] = DebianFetcher(self.store.root, lock, locked=self.locked)
            except LockError as error:
                raise Unavailable(str(error)) from error
        return self._fetchers[suite]

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

    def image(self, arch: str, kind: str = "minimal") -> MinimalImage:
        """The kernel and initrd a direct boot of `kind` starts: the minimal image, or the first stage of
        the mostly-source image."""
        if kind == "gosource":
            return self.gosource().stage1[arch]
        if arch not in self._images:
            try:
                self._images[arch] = build_minimal(self.store, self.fetcher(), arch)
            except (FetchError, MirrorNotFound) as error:
                raise Unavailable(f"{arch} kernel/busybox packages could not be fetched: {error}") from error
        return self._images[arch]

    def gosource(self) -> GoSourceImage:
        """The mostly-source image (Go root, programs, first stages, stick): built once, then from the store."""
        if self._gosource is None:
            try:
                fetcher = self.fetcher()
                go_root = build_go_root(self.store, fetcher)
                programs = build_programs(self.store, go_root)
                stage1 = {arch: build_stage1(self.store, fetcher, arch) for arch in ARCHES}
                self._gosource = build_gosource_image(self.store, fetcher, go_root, programs, stage1)
            except (FetchError, MirrorNotFound, StickError) as error:
                raise Unavailable(f"the mostly-source image could not be built: {error}") from error
        return self._gosource

    def firmware(self, suite: str) -> FirmwareSet:
        if suite not in self._firmware:
            try:
                self._firmware[suite] = firmware_set(self.store, self.fetcher(suite))
            except (FetchError, MirrorNotFound) as error:
                raise Unavailable(f"firmware set {suite} could not be fetched: {error}") from error
        return self._firmware[suite]

    def stick(self) -> Path:
        if self._stick is None:
            try:
                self._stick = build_stick(self.store, self.fetcher(), {a: self.image(a) for a in ARCHES})
            except (FetchError, MirrorNotFound, StickError) as error:
                raise Unavailable(f"the boot stick could not be built: {error}") from error
        return self._stick

    def media(self, cell: Cell) -> BootMedia:
        firmware = self.firmware(cell.firmware_set) if needs_firmware_set(cell) else None
        if cell.image == "gosource":
            return BootMedia(self.image(cell.arch, cell.image), firmware, self.gosource().stick)
        return BootMedia(self.image(cell.arch), firmware, self.stick() if cell.media == "stick" else None)

    def spec(self, cell: Cell, accel: str, nics: tuple[Nic, ...] = ()) -> MachineSpec:
        """The cell's MachineSpec; Unavailable when its firmware is missing or its QEMU refuses the shape."""
        qemu = self.qemu(cell.qemu)
        try:
            qemu.version(cell.arch)
            spec = spec_for(cell, self.media(cell), accel, nics)
        except (QemuNotFound, FirmwareMissing) as error:
            raise Unavailable(str(error)) from error
        if spec.pflash:
            # Flash firmware needs pflash0/pflash1 machine properties (riscv64 virt: QEMU >= 8.1): ask QEMU.
            probe = (*machine_args(spec), *pflash_args(spec, force_read_only=True))
            refusal = qemu.refusal(cell.arch, probe)
            if refusal:
                raise Unavailable(f"{qemu.name} QEMU {qemu.version(cell.arch)} cannot boot {cell.id}: {refusal}")
        return spec

    def accel(self, cell: Cell) -> tuple[str, str]:
        probe = None
        if cell.arch == "x86_64":
            image = self.image("x86_64")
            probe = ProbeKernel(
                image.kernel, image.initrd, f"console={CONSOLE['x86_64']} panic=-1", image.ready_marker,
                image.key,
            )
        return choose_accel(cell.arch, self.qemu(cell.qemu), self.store.root / "accel", cell.accel, probe)

    def machine(
        self, cell: Cell, workdir: Path, name: str = "vm", nics: tuple[Nic, ...] = ()
    ) -> tuple[Machine, BootRecord]:
        """A machine for `cell`, not yet started, and the record its boot will fill in."""
        qemu = self.qemu(cell.qemu)
        accel, why = self.accel(cell)
        spec = self.spec(cell, accel, nics)
        firmware = self._firmware.get(cell.firmware_set) if needs_firmware_set(cell) else None
        record = BootRecord(
            cell.id, accel, why, qemu.name, qemu.version(cell.arch),
            firmware.suite if firmware else None, dict(firmware.versions) if firmware else {},
        )
        record.packages = self.package_versions(cell)
        record.package_drift = [str(m) for m in self.drift()]
        record.config = configuration(cell, spec, record, booted=True)
        image = self.image(cell.arch, cell.image)
        timeline = Timeline([*TIMELINE_PHASES, ("init", image.ready_marker)])
        machine = Machine(spec, qemu, workdir, name=name, timeline=timeline, bad_patterns=dict(image.bad_patterns))
        return machine, record

    def package_versions(self, cell: Cell) -> dict[str, str]:
        """name -> version of the Debian packages a cell boots with (QEMU's own programs, not its
        library closure), as really used: the lock's, or the re-resolved ones after drift."""
        fetcher = self.fetcher()
        sets = [kernel_set(cell.arch), busybox_set(cell.arch)]
        if cell.image == "gosource":
            sets += [go_set(cell.arch), shell_set(cell.arch)]
        versions = {p.name: p.version for name in sets for p in fetcher.packages(name)}
        if cell.qemu == "pinned":
            versions |= {p.name: p.version for p in fetcher.packages(qemu_set()) if p.name.startswith("qemu-system")}
        return dict(sorted(versions.items()))

    def drift(self) -> list[Moved]:
        """Every package used instead of a locked one in this process (empty when the lock held)."""
        return [m for fetcher in self._fetchers.values() for m in fetcher.drift]

    def boot_budget(self, cell: Cell, accel: str) -> float:
        return scaled(BOOT_BUDGET_TCG, cell.arch, accel)

    def boot(self, machine: Machine, record: BootRecord, deadline: Deadline) -> BootRecord:
        """Start (if needed) and wait for the image's readiness marker and a shell that answers."""
        if machine.process is None:
            machine.start()
        marker = self.image(machine.spec.arch).ready_marker
        try:
            machine.console.expect(marker, deadline, what="readiness marker")
            machine.console.wait_shell(deadline)
            machine.timeline.mark("ready", time.monotonic() - machine.t0)
        finally:
            record.milestones = machine.timeline.as_dict()
            (machine.workdir / "boot.json").write_text(json.dumps(asdict(record), indent=2) + "\n")
        return record

    def boot_and_check(
        self, cell: Cell, workdir: Path, then: Callable[[Machine, BootRecord], None] | None = None
    ) -> BootOutcome:
        """Boot `cell` to a shell, check the shell computes, run `then` on the machine, stop. Raises
        Unavailable; never MachineError (a guest failure is a failed outcome)."""
        machine, record = self.machine(cell, workdir)
        budget = self.boot_budget(cell, record.accel)
        try:
            with machine:
                self.boot(machine, record, Deadline.after(budget))
                output, code = machine.console.run("echo $((6*7))", Deadline.after(budget))
                if (output, code) != ("42", 0):
                    return BootOutcome(record, False, f"shell answered {output!r} / {code}, not '42' / 0", workdir)
                if then is not None:
                    then(machine, record)
        except MachineError as error:
            return BootOutcome(record, False, str(error).splitlines()[0], workdir)
        return BootOutcome(record, True, "", workdir)
