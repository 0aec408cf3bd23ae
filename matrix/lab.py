"""The lab: what the pytest plugin and the CLI share, a thin facade over the jobs it is made of.

- provisioning (matrix/provision.py): every image, QEMU build, firmware set and file a cell needs,
  built once; its one error, CellError (cannot run here, or broken);
- the machine: the cell's MachineSpec through its image kind and firmware profile, the accelerator
  (the KVM probe), its readiness and boot record (matrix/record.py);
- the boot (matrix/boot.py): explicit states to ready;
- snapshots (matrix/snapshots.py): boot once, restore per test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from arches import KERNEL_OPTIONS
from harness.accel import ProbeKernel, choose_accel
from harness.console import last_lines
from harness.deadline import Deadline
from harness.errors import GuestError, MachineError
from harness.machine import Machine
from harness.net import Nic
from harness.qemu import QemuNotFound
from harness.snapshot import Snapshot, restored_spec
from harness.spec import MachineSpec, machine_args, pflash_args
from harness.timeline import Timeline
from harness.timeouts import scaled
from images.recipes.debian import GuestJob
from images.recipes.firmware import FirmwareMissing
from matrix import boot as boot_protocol
from matrix import snapshots
from matrix.build_vm import run_guest_job
from matrix.kinds import Readiness, kind_of
from matrix.model import Cell
from matrix.profiles import CONSOLE, BootMedia, needs_firmware_set, spec_for
from matrix.provision import CellBroken, CellError, Provisioner, Unavailable, cell_errors
from matrix.record import BootOutcome, BootRecord, configuration

__all__ = ["BootOutcome", "BootRecord", "CellBroken", "CellError", "Lab", "Unavailable", "configuration"]

BOOT_BUDGET_TCG = 120.0  # seconds to the shell under TCG (UEFI on aarch64 is the slowest); a hang, not a gate


class Lab(Provisioner):
    def media(self, cell: Cell) -> BootMedia:
        """What the cell boots: its files fetched, built and checked (a user's disk that names a host
        file is refused here); Unavailable when its firmware is missing."""
        try:
            firmware = self.firmware(cell.firmware_set) if needs_firmware_set(cell) else None
            return kind_of(cell).media(self, cell, firmware)
        except FirmwareMissing as error:
            raise Unavailable(str(error)) from error

    def readiness(self, cell: Cell) -> Readiness:
        """How the cell's boot becomes ready (its image kind says, and the cell's `bad` patterns fail it
        too): worked out once per VM, in machine()."""
        return kind_of(cell).readiness(self, cell).with_cell(cell)

    def restorable(self, cell: Cell) -> bool:
        """Cells whose VM may start from a snapshot (their image kind says: our minimal image)."""
        return kind_of(cell).restorable(cell)

    def spec(self, cell: Cell, accel: str, nics: tuple[Nic, ...] = (), media: BootMedia | None = None) -> MachineSpec:
        """The cell's MachineSpec (of `media`, else media() now); Unavailable when its firmware is missing
        or its QEMU refuses the shape."""
        qemu = self.qemu(cell.qemu)
        try:
            qemu.version(cell.arch)
            spec = spec_for(cell, media if media is not None else self.media(cell), accel, nics)
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
        """The accelerator and why: KVM where the probe (a boot of our x86_64 image) says it works."""
        probe = None
        if cell.arch == "x86_64":
            image = self.image("x86_64")
            probe = ProbeKernel(image.kernel, image.initrd, f"console={CONSOLE['x86_64']} {KERNEL_OPTIONS}",
                                image.ready_marker, image.key)
        return choose_accel(cell.arch, self.qemu(cell.qemu), self.store.root / "accel", cell.accel, probe)

    def run_guest(self, job: GuestJob) -> str:
        """A build step in a VM of its arch, booted by this lab (matrix/build_vm.py)."""
        return run_guest_job(self, job)

    def boot_budget(self, cell: Cell, accel: str) -> float:
        """Seconds to readiness before it is a hang: the cell's own `timeout`, else the arch's budget."""
        return cell.timeout if cell.timeout is not None else scaled(BOOT_BUDGET_TCG, cell.arch, accel)

    def machine(
        self, cell: Cell, workdir: Path, name: str = "vm", nics: tuple[Nic, ...] = (), *, restore: bool = False,
        customize: Callable[[MachineSpec], MachineSpec] | None = None, prepare: str = "", booted: bool = True,
    ) -> tuple[Machine, BootRecord]:
        """A machine for `cell`, not yet started, and the record its boot will fill in (with its
        readiness). `customize` changes the spec first, the same way for a cold boot and a restore. With
        `restore`, one that starts from the cell's snapshot for that spec (built first if needed, after
        running the shell command `prepare`): `resume` runs it. `booted`: whether the machine will be
        booted to ready (its configuration hash says so). Raises CellError only."""
        with cell_errors(cell):
            qemu = self.qemu(cell.qemu)
            media = self.media(cell)  # first: a bad file of the cell fails it before any QEMU (the KVM probe) runs
            accel, why = self.accel(cell)
            spec = self.spec(cell, accel, nics, media)
            if customize is not None:
                spec = customize(spec)
            readiness = self.readiness(cell)
            snapshot = self.snapshot(cell, spec, prepare) if restore else None
            firmware = self.firmware(cell.firmware_set) if needs_firmware_set(cell) else None
            record = BootRecord(
                cell.id, accel, why, qemu.name, qemu.version(cell.arch),
                firmware.suite if firmware else None, dict(firmware.versions) if firmware else {},
                readiness=readiness,
            )
            record.packages = self.package_versions(cell)
            record.package_drift = [str(m) for m in self.drift()]
        timeline = boot_protocol.boot_timeline(readiness)
        if snapshot is not None:  # a restored VM's own phases (snapshots.resume marks them): no boot to see
            spec = restored_spec(spec, snapshot, workdir)
            timeline = Timeline([])
            record.snapshot = str(snapshot.folder)
        record.config = configuration(cell, spec, record, booted=booted)
        return Machine(spec, qemu, workdir, name=name, timeline=timeline, bad_patterns=readiness.bad_patterns), record

    def boot(self, machine: Machine, record: BootRecord, deadline: Deadline) -> BootRecord:
        """Take a machine from machine() through its boot states to ready (matrix/boot.py)."""
        return boot_protocol.boot(machine, record, deadline)

    def snapshot(self, cell: Cell, spec: MachineSpec, prepare: str = "") -> Snapshot:
        """The cell's VM saved at its ready state, for `spec` (matrix/snapshots.py)."""
        qemu = self.qemu(cell.qemu)
        return snapshots.build_snapshot(self.store, qemu, cell, spec, readiness=self.readiness(cell),
                                        budget=self.boot_budget(cell, spec.accel), prepare=prepare)

    def forget_snapshot(self, snapshot: Path) -> None:
        snapshots.forget_snapshot(self.store, snapshot)

    def resume(self, machine: Machine, record: BootRecord, deadline: Deadline) -> BootRecord:
        """Start a machine from machine(..., restore=True) from its snapshot, to a shell that answers."""
        return snapshots.resume_machine(machine, record, deadline)

    def boot_and_check(
        self, cell: Cell, workdir: Path, then: Callable[[Machine, BootRecord], None] | None = None
    ) -> BootOutcome:
        """Boot `cell` to ready, check its shell computes (where it has one), run `then` on the machine,
        stop. Raises CellError; never MachineError (a guest failure is a failed outcome)."""
        machine, record = self.machine(cell, workdir)
        budget = self.boot_budget(cell, record.accel)
        try:
            with machine:
                self.boot(machine, record, Deadline.after(budget))
                if record.readiness is not None and record.readiness.shell:
                    output, code = machine.console.run("echo $((6*7))", Deadline.after(budget))
                    if (output, code) != ("42", 0):
                        return BootOutcome(record, False, f"shell answered {output!r} / {code}, not '42' / 0",
                                           workdir, last_lines(machine.tail()))
                if then is not None:
                    then(machine, record)
        except MachineError as error:
            tail = error.tail if isinstance(error, GuestError) and error.tail else machine.tail()
            return BootOutcome(record, False, str(error).splitlines()[0], workdir, last_lines(tail))
        return BootOutcome(record, True, "", workdir)
