"""Snapshots of a cell's VM: booted once to ready (and the shell command `prepare`, openQA's milestone:
setup done once), saved through harness.snapshot into the store, keyed by everything a restore must
match; restored per test with `resume`. A snapshot a restore failed from is dropped, and rebuilt on
its next use."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from harness.deadline import Deadline
from harness.machine import Machine
from harness.qemu import QemuInstall
from harness.snapshot import Snapshot, SnapshotError, fingerprint_key, nic_placeholders, resume, save, with_own_overlays
from harness.spec import MachineSpec
from harness.timeline import Phase
from images.store import Store, scratch_dir
from matrix.boot import boot, boot_timeline
from matrix.kinds import Readiness
from matrix.model import Cell
from matrix.record import BootRecord

SNAPSHOT_RECIPE = 1
STORE_NAME = "vm-snapshot"


def snapshot_inputs(qemu: QemuInstall, cell: Cell, spec: MachineSpec, prepare: str) -> dict[str, object]:
    """The store key's inputs: the QEMU binary (by name, version and stat), the machine as started, the
    cell, the preparing command."""
    binary = qemu.binary(cell.arch).stat()
    return {"recipe": SNAPSHOT_RECIPE, "qemu": [qemu.name, qemu.version(cell.arch), binary.st_size, binary.st_mtime_ns],
            "machine": fingerprint_key(spec, qemu.name), "cell": cell.id, "prepare": prepare}


def build_snapshot(store: Store, qemu: QemuInstall, cell: Cell, spec: MachineSpec, *, readiness: Readiness,
                   budget: float, prepare: str = "") -> Snapshot:
    """The cell's VM saved at its ready state, for `spec`, built once across workers and sessions: one
    cold boot, `prepare` if any, then a save. The guest wrote /run/bootmatrix-saved-at (the host's
    epoch) just before the save."""

    def build(content: Path) -> None:
        with scratch_dir("snapshot") as scratch:
            work = Path(scratch)
            build_spec, keep = nic_placeholders(spec)
            build_spec = with_own_overlays(build_spec, work)
            machine = Machine(build_spec, qemu, work, name="snapshot", timeline=boot_timeline(readiness),
                              bad_patterns=readiness.bad_patterns)
            record = BootRecord(cell.id, spec.accel, "snapshot build", qemu.name, qemu.version(cell.arch), None, {},
                                readiness=readiness)
            try:
                with machine:
                    boot(machine, record, Deadline.after(budget))
                    if prepare:
                        output, code = machine.console.run(prepare, Deadline.after(budget))
                        if code != 0:
                            raise SnapshotError(f"preparing the snapshot: {prepare!r} exited {code}: {output}")
                    machine.console.run(f"echo {time.time():.0f} > /run/bootmatrix-saved-at", Deadline.after(budget))
                    save(machine, content, Deadline.after(budget))
                    machine.stop(check=False)
                shutil.copyfile(work / "console.log", content / "boot-console.log")
            finally:
                for sock in keep:
                    sock.close()  # type: ignore[attr-defined]

    (store.root / "tmp").mkdir(parents=True, exist_ok=True)
    folder = store.get(STORE_NAME, snapshot_inputs(qemu, cell, spec, prepare), build)
    folder.chmod(0o700)  # private, like every save (harness/snapshot.py), entries saved before that included
    return Snapshot(folder)


def forget_snapshot(store: Store, snapshot: Path) -> None:
    """Drop a snapshot a restore failed from (QEMU refused it): the next restore rebuilds it."""
    manifest = json.loads((snapshot.parent / "manifest.json").read_text())
    store.discard(STORE_NAME, dict(manifest["inputs"]))


def resume_machine(machine: Machine, record: BootRecord, deadline: Deadline) -> BootRecord:
    """Start a machine made to restore (Lab.machine(..., restore=True)), load its snapshot, and wait
    until a shell answers (a fresh marker round trip over the new console); set the guest's clock to
    the host's when it is behind by more than a second. Milestones: process, incoming, ready."""
    try:
        machine.start()
        resume(machine, Snapshot(Path(record.snapshot)), deadline)
        machine.console.wait_shell(deadline)
        machine.timeline.mark(Phase.READY, time.monotonic() - machine.t0)
        guest_time, _ = machine.console.run("date +%s", deadline)
        if abs(time.time() - float(guest_time or 0)) > 1.0:
            machine.console.run(f"date -s @{time.time():.0f} >/dev/null", deadline)
    finally:
        record.save(machine)
    return record
