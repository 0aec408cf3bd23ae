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
from harness.timeline import Timeline
from harness.timeouts import scaled
from images.artifacts import ArtifactSource, efi_disk, find_locked, resolve
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
from images.recipes.goplans import build_plans
from images.recipes.gosource import GoSourceImage, build_go_root, build_gosource_image, build_programs, build_stage1
from images.recipes.minimal import MinimalImage, build_minimal
from images.recipes.qemu import pinned_qemu_prefix
from images.recipes.stick import build_stick
from images.recipes.tinyboot import TinybootIso, build_app, build_tinyboot_iso
from images.store import Store
from images.tools import ToolMissing
from matrix.history import configuration_hash
from matrix.model import DEFAULT_FIRMWARE_SET, Cell, Login
from matrix.profiles import CONSOLE, TIMELINE_PHASES, BootMedia, needs_firmware_set, spec_for

LOGIN_PROMPT = r"(?m)login: *$"
PASSWORD_PROMPT = r"(?m)[Pp]assword: *$"
SNAPSHOT_RECIPE = 1
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
    snapshot: str = ""  # the snapshot folder a restored VM starts from ("" for a cold boot)

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

    def image(self, arch: str, kind: str = "minimal") -> MinimalImage:
        """The kernel and initrd a direct boot of `kind` starts: the minimal image, or the first stage of
        the mostly-source image."""
        if kind == "gosource":
            return self.gosource().stage1[arch]
        if kind == "tinyboot":
            return self.tinyboot(arch).image
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
        if cell.artifact_cell:
            return BootMedia(self.own_image(cell), firmware, None, self.artifacts(cell))
        if cell.image == "gosource":
            return BootMedia(self.image(cell.arch, cell.image), firmware, self.gosource().stick)
        if cell.image == "tinyboot":
            tinyboot = self.tinyboot(cell.arch)
            return BootMedia(tinyboot.image, firmware, None, {"iso": tinyboot.iso})
        return BootMedia(self.image(cell.arch), firmware, self.stick() if cell.media == "stick" else None)

    def image_of(self, cell: Cell) -> MinimalImage | None:
        """The image whose readiness marker, failure messages and DHCP command a cell's boot uses: ours
        (minimal, the mostly-source first stage, or the tinyboot ISO's kernel and initramfs), or for an
        artifact cell the one it borrows from."""
        return self.own_image(cell) if cell.artifact_cell else self.image(cell.arch, cell.image)

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
        customize: Callable[[MachineSpec], MachineSpec] | None = None, prepare: str = "",
    ) -> tuple[Machine, BootRecord]:
        """A machine for `cell`, not yet started, and the record its boot will fill in. `customize`
        changes the spec first. With `restore`, one that starts from the cell's snapshot for that spec
        (built first if needed, after running the shell command `prepare`): `resume` runs it."""
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
        record.config = configuration(cell, spec, record, booted=True)
        image = self.image_of(cell)
        bad = dict(image.bad_patterns) if image is not None else {}
        bad |= {f"matrix bad pattern {pattern!r}": pattern for pattern in cell.bad}
        marker = ready_pattern(cell, image)
        timeline = Timeline([*TIMELINE_PHASES, *((("init", marker),) if marker else ())])
        if snapshot is not None:  # a restored VM's own phases (snapshot.resume marks them): no boot to see
            timeline = Timeline([])
            record.snapshot = str(snapshot.folder)
        machine = Machine(spec, qemu, workdir, name=name, timeline=timeline, bad_patterns=bad)
        return machine, record

    # -- snapshots ---------------------------------------------------------------------------------
    def restorable(self, cell: Cell) -> bool:
        """Cells whose VM may start from a snapshot: our minimal image. A user's artifact is booted as
        it is; the mostly-source image's tests measure its first builds after a boot."""
        return not cell.artifact_cell and cell.image == "minimal"

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
        image = self.image(cell.arch, cell.image)

        def build(content: Path) -> None:
            with tempfile.TemporaryDirectory(dir=self.store.root / "tmp") as scratch:
                work = Path(scratch)
                build_spec, keep = nic_placeholders(spec)
                build_spec = with_own_overlays(build_spec, work)
                timeline = Timeline([*TIMELINE_PHASES, ("init", image.ready_marker)])
                machine = Machine(build_spec, qemu, work, name="snapshot", timeline=timeline,
                                  bad_patterns=dict(image.bad_patterns))
                record = BootRecord(cell.id, spec.accel, "snapshot build", qemu.name, qemu.version(cell.arch),
                                    None, {})
                budget = self.boot_budget(cell, spec.accel)
                try:
                    with machine:
                        self.boot(machine, record, Deadline.after(budget), cell)
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
            machine.timeline.mark("ready", time.monotonic() - machine.t0)
            guest_time, _ = machine.console.run("date +%s", deadline)
            if abs(time.time() - float(guest_time or 0)) > 1.0:
                machine.console.run(f"date -s @{time.time():.0f} >/dev/null", deadline)
        finally:
            record.milestones = machine.timeline.as_dict()
            (machine.workdir / "boot.json").write_text(json.dumps(asdict(record), indent=2) + "\n")
        return record

    def package_versions(self, cell: Cell) -> dict[str, str]:
        """name -> version of the Debian packages a cell boots with (QEMU's own programs, not its
        library closure), as really used: the lock's, or the re-resolved ones after drift."""
        fetcher = self.fetcher()
        sets = [kernel_set(cell.arch), busybox_set(cell.arch)]
        if cell.artifact_cell:
            sets = sets if self.own_image(cell) is not None else []
            for artifact in cell.artifacts().values():
                if artifact.deb is not None:
                    set_name, _ = find_locked(fetcher, artifact.deb, ARCH_TABLE[cell.arch].debian)
                    sets.append(set_name)
        if cell.image == "gosource":
            sets += [go_set(cell.arch), shell_set(cell.arch)]
        if cell.image == "tinyboot":
            sets = [kernel_set(cell.arch), go_set(cell.arch)]  # its kernel; the app's toolchain
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

    def boot(self, machine: Machine, record: BootRecord, deadline: Deadline, cell: Cell | None = None) -> BootRecord:
        """Start (if needed) and wait until the cell is ready: our image's readiness marker and a shell
        that answers; or an artifact cell's `ready` pattern, then its login and shell when it has them.
        A wait that ends without it names the last boot phase seen."""
        if machine.process is None:
            machine.start()
        image = self.image_of(cell) if cell is not None else self.image(machine.spec.arch)
        marker = ready_pattern(cell, image)
        try:
            if marker:
                machine.console.expect(marker, deadline, what="readiness marker" if image else f"ready {marker!r}")
            if cell is not None and cell.login is not None:
                log_in(machine, cell.login, deadline)
            if expects_shell(cell):
                machine.console.wait_shell(deadline)
            machine.timeline.mark("ready", time.monotonic() - machine.t0)
        except ConsoleTimeout as error:
            seen = machine.timeline.as_dict()
            # In time order, a tie kept in the order seen ("first-output" and "firmware" often share a
            # chunk): the last entry is the furthest phase.
            last = next(reversed(seen)) if seen else None
            phase = f"last boot phase seen: {last} at {seen[last]:.2f} s" if last else (
                "no boot phase seen (no firmware, loader or kernel output recognised)")
            raise ConsoleTimeout(f"{error.reason}; {phase}", error.tail, error.waited_for) from None
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
                self.boot(machine, record, Deadline.after(budget), cell)
                if expects_shell(cell):
                    output, code = machine.console.run("echo $((6*7))", Deadline.after(budget))
                    if (output, code) != ("42", 0):
                        return BootOutcome(record, False, f"shell answered {output!r} / {code}, not '42' / 0",
                                           workdir)
                if then is not None:
                    then(machine, record)
        except MachineError as error:
            return BootOutcome(record, False, str(error).splitlines()[0], workdir)
        return BootOutcome(record, True, "", workdir)


def ready_pattern(cell: Cell | None, image: MinimalImage | None) -> str | None:
    """What readiness looks like on the console before any shell probe: the cell's `ready` regex, a
    login prompt when it logs in, our image's marker, or nothing (a shell that answers is enough)."""
    if cell is not None and cell.ready is not None:
        return cell.ready
    if cell is not None and cell.login is not None:
        return LOGIN_PROMPT
    return image.ready_marker if image is not None else None


def expects_shell(cell: Cell | None) -> bool:
    """Whether readiness ends with a shell that answers: always for our images; for an artifact cell
    when it logs in or names no `ready` pattern (a banner or an installer's screen has no shell)."""
    if cell is not None and cell.image == "tinyboot":
        return False  # one app and no shell
    return cell is None or not cell.artifact_cell or cell.login is not None or cell.ready is None


def log_in(machine: Machine, login: Login, deadline: Deadline) -> None:
    """Answer a login prompt (already seen) with the user, and the password prompt if one comes."""
    machine.console.sendline(login.user)
    if login.password:
        machine.console.expect(PASSWORD_PROMPT, deadline, what="password prompt")
        machine.console.sendline(login.password)
