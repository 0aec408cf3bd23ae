"""The lab: what the pytest plugin and the CLI share. Given a cell, it finds the QEMU build, builds the
images, the stick and the firmware set (through the store, so once across xdist workers and sessions),
picks the accelerator, starts the machine in a work folder with a boot timeline, and boots it to a shell.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from arches import ARCHES as ARCH_TABLE
from arches import KERNEL_OPTIONS, NAMES
from harness.accel import ProbeKernel, choose_accel
from harness.deadline import Deadline
from harness.errors import ConsoleTimeout, MachineError
from harness.machine import Machine
from harness.net import Nic
from harness.qemu import QemuInstall, QemuNotFound
from harness.snapshot import (
    Snapshot,
    SnapshotError,
    fingerprint_key,
    nic_placeholders,
    restored_spec,
    resume,
    save,
    with_own_overlays,
)
from harness.spec import MachineSpec, machine_args, pflash_args
from harness.timeline import Phase, Timeline
from harness.timeouts import scaled
from images.artifacts import ArtifactError, ArtifactSource, efi_disk, resolve
from images.debian.fetch import DebianFetcher, FetchError, Moved
from images.debian.lock import (
    LockError,
    Lockfile,
    lock_path,
    qemu_set,
)
from images.debian.mirror import MirrorNotFound
from images.recipes.firmware import FirmwareMissing, FirmwareSet, firmware_set
from images.recipes.goplans import build_plans
from images.recipes.gosource import GoSourceImage, build_go_root, build_gosource_image, build_programs, build_stage1
from images.recipes.minimal import MinimalImage, build_minimal
from images.recipes.qemu import pinned_qemu_prefix
from images.recipes.stick import build_stick
from images.recipes.tinyboot import TinybootIso, build_app, build_tinyboot_iso
from images.store import Store
from images.tools import BuildError, ToolMissing
from matrix.history import configuration_hash
from matrix.kinds import Readiness, kind_of
from matrix.model import DEFAULT_FIRMWARE_SET, Cell, Login
from matrix.profiles import CONSOLE, TIMELINE_PHASES, BootMedia, needs_firmware_set, spec_for

PASSWORD_PROMPT = r"(?m)[Pp]assword: *$"
SNAPSHOT_RECIPE = 1
BOOT_BUDGET_TCG = 120.0  # seconds to the shell under TCG (UEFI on aarch64 is the slowest); a hang, not a gate
ARCHES = NAMES


class CellError(Exception):
    """Why a cell cannot boot, before any guest runs: the one error the CLI and the plugin catch from
    the lab. `cannot_run`: the cell cannot run here (a skip, or an error in strict mode); otherwise it
    is broken (a failed cell). `detail`: the whole story (a build tool's full output)."""

    cannot_run = False

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail or message


class Unavailable(CellError):
    """Something a cell needs cannot be had here (a QEMU binary or capability, packages, a firmware)."""

    cannot_run = True


class CellBroken(CellError):
    """Something a cell needs is broken: an image that could not be built, a user's file that cannot
    be had."""


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
    snapshot: str = ""  # the snapshot folder a restored VM starts from ("" for a cold boot)
    # How this VM's boot becomes ready, worked out once (Lab.machine) and carried with the VM. Not part of
    # boot.json (a login's password would be).
    readiness: Readiness | None = field(default=None, repr=False, compare=False)

    def as_json(self) -> dict[str, object]:
        """The record as boot.json keeps it."""
        return {k: v for k, v in asdict(self).items() if k != "readiness"}

    @property
    def time_to_ready(self) -> float | None:
        return self.milestones.get(Phase.READY)


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
        self._tinyapp: Path | None = None
        self._tinyboot: dict[str, TinybootIso] = {}

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

    def image(self, arch: str) -> MinimalImage:
        """Our minimal image of `arch` (kernel and busybox initramfs): built once, then from the store."""
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
                # One thread beside the main one: the first stages are built while the Go root is, the
                # programs while the plans are (measured from a warm package cache, 92 s with one thread
                # beside, 102 s with three: the Go root's compiles keep the cores busy already).
                with ThreadPoolExecutor(max_workers=1) as pool:
                    stage1_jobs = {arch: pool.submit(build_stage1, self.store, fetcher, arch) for arch in ARCHES}
                    go_root = build_go_root(self.store, fetcher)
                    programs_job = pool.submit(build_programs, self.store, go_root)
                    plans = build_plans(self.store, go_root)
                    programs = programs_job.result()
                    stage1 = {arch: job.result() for arch, job in stage1_jobs.items()}
                self._gosource = build_gosource_image(self.store, fetcher, go_root=go_root, programs=programs,
                                                      plans=plans, stage1=stage1)
            except (FetchError, MirrorNotFound, ToolMissing) as error:
                raise Unavailable(f"the mostly-source image could not be built: {error}") from error
        return self._gosource

    def tinyboot(self, arch: str) -> TinybootIso:
        """The tinyboot ISO of `arch` (the example Go app as PID 1): built once, then from the store."""
        if arch not in self._tinyboot:
            try:
                if self._tinyapp is None:
                    self._tinyapp = build_app(self.store, build_go_root(self.store, self.fetcher()))
                self._tinyboot[arch] = build_tinyboot_iso(self.store, self.fetcher(), arch, self._tinyapp)
            except (FetchError, MirrorNotFound, ToolMissing) as error:
                raise Unavailable(f"the tinyboot ISO could not be built: {error}") from error
        return self._tinyboot[arch]

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
            except (FetchError, MirrorNotFound, ToolMissing) as error:
                raise Unavailable(f"the boot stick could not be built: {error}") from error
        return self._stick

    def media(self, cell: Cell) -> BootMedia:
        firmware = self.firmware(cell.firmware_set) if needs_firmware_set(cell) else None
        return kind_of(cell).media(self, cell, firmware)

    def readiness(self, cell: Cell) -> Readiness:
        """How the cell's boot becomes ready (its image kind says): worked out once per VM, in machine()."""
        return kind_of(cell).readiness(self, cell)

    def debian_arch(self, arch: str) -> str:
        return ARCH_TABLE[arch].debian

    def own_image(self, cell: Cell) -> MinimalImage | None:
        """Our minimal image of the cell's arch when an artifact cell borrows its kernel or initramfs."""
        borrowed = [a for a in (cell.kernel, cell.initrd) if a is not None and a.image is not None]
        return self.image(cell.arch) if borrowed else None

    def artifacts(self, cell: Cell) -> dict[str, Path]:
        """The local file of each artifact of a cell: fetched, verified and stored as needed. A file
        that cannot be had is ArtifactError naming the cell, the key and the source."""
        files: dict[str, Path] = {}
        image = self.own_image(cell)
        for key, artifact in cell.artifacts().items():
            what = f"{cell.id}: {key}"
            if artifact.image is not None:
                assert image is not None
                files[key] = image.kernel if key == "kernel" else image.initrd
                continue
            fetcher = self.fetcher() if artifact.deb is not None else None
            source = ArtifactSource(
                path=Path(artifact.path) if artifact.path is not None and artifact.deb is None else None,
                url=artifact.url, sha256=artifact.sha256, deb=artifact.deb,
                member=artifact.path if artifact.deb is not None else None,
            )
            files[key] = resolve(source, what, self.store, fetcher, ARCH_TABLE[cell.arch].debian)
        if "efi" in files:
            files["efi"] = efi_disk(self.store, files["efi"], ARCH_TABLE[cell.arch].efi_name[1], f"{cell.id}: efi")
        return files

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
                image.kernel, image.initrd, f"console={CONSOLE['x86_64']} {KERNEL_OPTIONS}", image.ready_marker,
                image.key,
            )
        return choose_accel(cell.arch, self.qemu(cell.qemu), self.store.root / "accel", cell.accel, probe)

    def machine(
        self, cell: Cell, workdir: Path, name: str = "vm", nics: tuple[Nic, ...] = (), *, restore: bool = False,
        customize: Callable[[MachineSpec], MachineSpec] | None = None, prepare: str = "", booted: bool = True,
    ) -> tuple[Machine, BootRecord]:
        """A machine for `cell`, not yet started, and the record its boot will fill in. `customize`
        changes the spec first, the same way for a cold boot and a restore. With `restore`, one that
        starts from the cell's snapshot for that spec (built first if needed, after running the shell
        command `prepare`): `resume` runs it. `booted`: whether the machine will be booted to ready (its
        configuration hash says so). Raises CellError only."""
        try:
            return self._machine(cell, workdir, name, nics, restore=restore, customize=customize, prepare=prepare,
                                 booted=booted)
        except BuildError as error:
            raise CellBroken(f"{cell.id}: an image could not be built: {' '.join(str(error).split())[:600]}",
                             str(error)) from error
        except ArtifactError as error:
            raise CellBroken(str(error).splitlines()[0], str(error)) from error

    def _machine(
        self, cell: Cell, workdir: Path, name: str, nics: tuple[Nic, ...], *, restore: bool,
        customize: Callable[[MachineSpec], MachineSpec] | None, prepare: str, booted: bool,
    ) -> tuple[Machine, BootRecord]:
        qemu = self.qemu(cell.qemu)
        accel, why = self.accel(cell)
        spec = self.spec(cell, accel, nics)
        if customize is not None:
            spec = customize(spec)
        snapshot = self.snapshot(cell, spec, prepare) if restore else None
        if snapshot is not None:
            spec = restored_spec(spec, snapshot, workdir)
        firmware = self._firmware.get(cell.firmware_set) if needs_firmware_set(cell) else None
        record = BootRecord(
            cell.id, accel, why, qemu.name, qemu.version(cell.arch),
            firmware.suite if firmware else None, dict(firmware.versions) if firmware else {},
        )
        record.packages = self.package_versions(cell)
        record.package_drift = [str(m) for m in self.drift()]
        record.config = configuration(cell, spec, record, booted=booted)
        record.readiness = self.readiness(cell)
        timeline = boot_timeline(record.readiness)
        if snapshot is not None:  # a restored VM's own phases (snapshot.resume marks them): no boot to see
            timeline = Timeline([])
            record.snapshot = str(snapshot.folder)
        machine = Machine(spec, qemu, workdir, name=name, timeline=timeline,
                          bad_patterns=record.readiness.bad_patterns)
        return machine, record

    # -- snapshots ---------------------------------------------------------------------------------
    def restorable(self, cell: Cell) -> bool:
        """Cells whose VM may start from a snapshot (their image kind says: our minimal image). A user's
        artifact is booted as it is; the mostly-source image's tests measure its first builds after a boot."""
        return kind_of(cell).restorable(cell)

    def _snapshot_inputs(self, cell: Cell, spec: MachineSpec, prepare: str) -> dict[str, object]:
        qemu = self.qemu(cell.qemu)
        binary = qemu.binary(cell.arch).stat()
        return {"recipe": SNAPSHOT_RECIPE, "qemu": [qemu.name, qemu.version(cell.arch), binary.st_size,
                                                    binary.st_mtime_ns],
                "machine": fingerprint_key(spec, qemu.name), "cell": cell.id, "prepare": prepare}

    def snapshot(self, cell: Cell, spec: MachineSpec, prepare: str = "") -> Snapshot:
        """The cell's VM saved at its ready state, for `spec` (built once across workers and sessions:
        one cold boot, the shell command `prepare` if any (openQA's milestone: setup done once), then a
        save). The guest wrote /run/bootmatrix-saved-at (the host's epoch) just before the save."""
        qemu = self.qemu(cell.qemu)
        readiness = self.readiness(cell)

        def build(content: Path) -> None:
            with tempfile.TemporaryDirectory(dir=self.store.root / "tmp") as scratch:
                work = Path(scratch)
                build_spec, keep = nic_placeholders(spec)
                build_spec = with_own_overlays(build_spec, work)
                machine = Machine(build_spec, qemu, work, name="snapshot", timeline=boot_timeline(readiness),
                                  bad_patterns=readiness.bad_patterns)
                record = BootRecord(cell.id, spec.accel, "snapshot build", qemu.name, qemu.version(cell.arch),
                                    None, {}, readiness=readiness)
                budget = self.boot_budget(cell, spec.accel)
                try:
                    with machine:
                        self.boot(machine, record, Deadline.after(budget))
                        if prepare:
                            output, code = machine.console.run(prepare, Deadline.after(budget))
                            if code != 0:
                                raise SnapshotError(f"preparing the snapshot: {prepare!r} exited {code}: {output}")
                        machine.console.run(f"echo {time.time():.0f} > /run/bootmatrix-saved-at",
                                            Deadline.after(budget))
                        save(machine, content, Deadline.after(budget))
                        machine.stop(check=False)
                    shutil.copyfile(work / "console.log", content / "boot-console.log")
                finally:
                    for sock in keep:
                        sock.close()  # type: ignore[attr-defined]

        (self.store.root / "tmp").mkdir(parents=True, exist_ok=True)
        return Snapshot(self.store.get("vm-snapshot", self._snapshot_inputs(cell, spec, prepare), build))

    def forget_snapshot(self, snapshot: Path) -> None:
        """Drop a snapshot a restore failed from (QEMU refused it): the next restore rebuilds it."""
        manifest = json.loads((snapshot.parent / "manifest.json").read_text())
        self.store.discard("vm-snapshot", {k: v for k, v in manifest["inputs"].items()})

    def resume(self, machine: Machine, record: BootRecord, deadline: Deadline) -> BootRecord:
        """Start a machine from `machine(..., restore=True)`, load its snapshot, and wait until a shell
        answers (a fresh marker round trip over the new console); set the guest's clock to the host's
        when it is behind by more than a second. Milestones: process, incoming, ready."""
        try:
            machine.start()
            resume(machine, Snapshot(Path(record.snapshot)), deadline)
            machine.console.wait_shell(deadline)
            machine.timeline.mark(Phase.READY, time.monotonic() - machine.t0)
            guest_time, _ = machine.console.run("date +%s", deadline)
            if abs(time.time() - float(guest_time or 0)) > 1.0:
                machine.console.run(f"date -s @{time.time():.0f} >/dev/null", deadline)
        finally:
            record.milestones = machine.timeline.as_dict()
            (machine.workdir / "boot.json").write_text(json.dumps(record.as_json(), indent=2) + "\n")
        return record

    def package_versions(self, cell: Cell) -> dict[str, str]:
        """name -> version of the Debian packages a cell boots with (QEMU's own programs, not its
        library closure), as really used: the lock's, or the re-resolved ones after drift."""
        fetcher = self.fetcher()
        sets = kind_of(cell).package_sets(self, cell)
        versions = {p.name: p.version for name in sets for p in fetcher.packages(name)}
        if cell.qemu == "pinned":
            versions |= {p.name: p.version for p in fetcher.packages(qemu_set()) if p.name.startswith("qemu-system")}
        return dict(sorted(versions.items()))

    def drift(self) -> list[Moved]:
        """Every package used instead of a locked one in this process (empty when the lock held)."""
        return [m for fetcher in self._fetchers.values() for m in fetcher.drift]

    def boot_budget(self, cell: Cell, accel: str) -> float:
        """Seconds to readiness before it is a hang: the cell's own `timeout`, else the arch's budget."""
        return cell.timeout if cell.timeout is not None else scaled(BOOT_BUDGET_TCG, cell.arch, accel)

    def boot(self, machine: Machine, record: BootRecord, deadline: Deadline) -> BootRecord:
        """Start (if needed) and take the machine through its boot states to ready, as the record's
        readiness says (labgrid's strategy: explicit states): the readiness pattern (our image's marker,
        a cell's `ready`, a login prompt), the login, then a shell that answers. A wait that ends without
        it names the state it was in and the last boot phase seen."""
        readiness = record.readiness
        if readiness is None:
            raise ValueError(f"{record.cell}: no readiness on its boot record (made by Lab.machine)")
        if machine.process is None:
            machine.start()
        state = BootState.STARTED
        try:
            if readiness.marker:
                state = BootState.MARKER
                machine.console.expect(readiness.marker, deadline, what=readiness.marker_label)
            if readiness.login is not None:
                state = BootState.LOGIN
                log_in(machine, readiness.login, deadline)
            if readiness.shell:
                state = BootState.SHELL
                machine.console.wait_shell(deadline)
            machine.timeline.mark(Phase.READY, time.monotonic() - machine.t0)
        except ConsoleTimeout as error:
            seen = machine.timeline.as_dict()
            # In time order, a tie kept in the order seen ("first-output" and "firmware" often share a
            # chunk): the last entry is the furthest phase.
            last = next(reversed(seen)) if seen else None
            phase = f"last boot phase seen: {last} at {seen[last]:.2f} s" if last else (
                "no boot phase seen (no firmware, loader or kernel output recognised)")
            raise ConsoleTimeout(f"{error.reason}; {phase}; boot state: {state}", error.tail,
                                 error.waited_for) from None
        finally:
            record.milestones = machine.timeline.as_dict()
            (machine.workdir / "boot.json").write_text(json.dumps(record.as_json(), indent=2) + "\n")
        return record

    def boot_and_check(
        self, cell: Cell, workdir: Path, then: Callable[[Machine, BootRecord], None] | None = None
    ) -> BootOutcome:
        """Boot `cell` to a shell, check the shell computes, run `then` on the machine, stop. Raises
        CellError; never MachineError (a guest failure is a failed outcome)."""
        machine, record = self.machine(cell, workdir)
        budget = self.boot_budget(cell, record.accel)
        try:
            with machine:
                self.boot(machine, record, Deadline.after(budget))
                if record.readiness is not None and record.readiness.shell:
                    output, code = machine.console.run("echo $((6*7))", Deadline.after(budget))
                    if (output, code) != ("42", 0):
                        return BootOutcome(record, False, f"shell answered {output!r} / {code}, not '42' / 0",
                                           workdir)
                if then is not None:
                    then(machine, record)
        except MachineError as error:
            return BootOutcome(record, False, str(error).splitlines()[0], workdir)
        return BootOutcome(record, True, "", workdir)


class BootState(StrEnum):
    """Where a boot is on its way to ready (a failure names it)."""

    STARTED = "started"
    MARKER = "waiting for the readiness pattern"
    LOGIN = "logging in"
    SHELL = "waiting for a shell that answers"


def boot_timeline(readiness: Readiness) -> Timeline:
    """The milestones a cold boot is watched for: every boot's phases, then the readiness pattern."""
    return Timeline([*TIMELINE_PHASES, *(((Phase.INIT, readiness.marker),) if readiness.marker else ())])


def log_in(machine: Machine, login: Login, deadline: Deadline) -> None:
    """Answer a login prompt (already seen) with the user, and the password prompt if one comes."""
    machine.console.sendline(login.user)
    if login.password:
        machine.console.expect(PASSWORD_PROMPT, deadline, what="password prompt")
        machine.console.sendline(login.password)
