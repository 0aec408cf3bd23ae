"""Boot once, restore many times: a running VM saved to files, and new VMs started from them.

Save (the VM is ready, e.g. at a shell): RAM and device state go through migration to a file
(`migrate` to `file:`, which QEMU 10 streams like a socket); each disk is a qcow2 overlay of this VM's own
(not QEMU's anonymous snapshot=on overlay, which cannot be kept), copied once the migration has paused
the guest, so it holds the disk exactly at the save point; the VARS flash bank is copied too.

Restore: QEMU starts with the same machine and devices plus `-incoming defer`; each disk opens through a
fresh overlay on top of the saved one (the snapshot is never written, and two restores never see each
other's writes); `migrate-incoming` loads the state and `cont` runs the guest. Everything the migration
stream does not carry comes from the new command line: the console and QMP socketpairs, the NIC
backends (user networking's restrict and forwards, a new wire), so those are re-bound for each restore.

What must match between save and restore (QEMU build, machine, CPU, memory, devices, NIC models and
MACs, firmware and image files) is the caller's to key the snapshot by (see `fingerprint`); a restore
that fails anyway (QEMU refuses the stream) raises SnapshotError, and the caller boots cold instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.deadline import Deadline
from harness.errors import MachineError
from harness.machine import Machine
from harness.net import DgramLink, Nic
from harness.qmp import QMP_FAILURES
from harness.spec import Disk, MachineSpec, Pflash
from harness.timeline import Phase

STATE = "state"  # the migration stream (RAM and devices)
META = "snapshot.json"
# Plain streaming (no capability), measured against mapped-ram by bench/snapshot.py: restores within 3-6 %
# of each other (0.15-0.21 s median per arch), but mapped-ram's file is as long as the guest's RAM (543-677
# MB, sparse) where the stream's is the RAM in use (49-93 MB), and the store hashes a file's whole length.
CAPABILITIES: list[dict[str, object]] = []


class SnapshotError(MachineError):
    """Saving or restoring failed; the message says which step and what QEMU said."""


@dataclass(frozen=True)
class Snapshot:
    folder: Path

    @property
    def state(self) -> Path:
        return self.folder / STATE

    def meta(self) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.folder / META).read_text())
        return data

    def disk(self, index: int) -> Path | None:
        path = self.folder / f"disk{index}.qcow2"
        return path if path.exists() else None

    def flash(self, unit: int) -> Path | None:
        path = self.folder / f"pflash{unit}.fd"
        return path if path.exists() else None


def fingerprint(spec: MachineSpec) -> dict[str, object]:
    """What a restore must match, as JSON-able data: the machine as QEMU is told it, the NICs by model
    and MAC (their backends come from the restoring command line), and every file by path and stat
    signature, so a changed kernel, initramfs, disk or firmware gives another snapshot."""

    def file(path: Path | None) -> list[object] | None:
        if path is None:
            return None
        stat = path.stat()
        return [str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino]

    return {
        "arch": spec.arch, "machine": spec.machine, "accel": spec.accel, "cpu": spec.cpu,
        "memory_mib": spec.memory_mib, "smp": spec.smp, "append": spec.append,
        "kernel": file(spec.kernel), "initrd": file(spec.initrd), "dtb": file(spec.dtb), "bios": file(spec.bios),
        "pflash": [[file(f.path), f.readonly] for f in spec.pflash],
        "disks": [[file(d.path), d.interface, d.format, d.readonly, d.snapshot] for d in spec.disks],
        "machine_options": list(spec.machine_options), "globals": list(spec.globals),
        "devices": list(spec.devices), "extra_args": list(spec.extra_args),
        "nics": [[type(n).__name__, n.model, n.mac] for n in spec.nics],
    }


def fingerprint_key(spec: MachineSpec, qemu: str) -> str:
    return hashlib.sha256(json.dumps([qemu, fingerprint(spec)], sort_keys=True).encode()).hexdigest()


def _overlay(base: Path, base_format: str, target: Path) -> None:
    """A qcow2 overlay on `base` (qemu-img from the host's qemu-utils: setup-host installs it)."""
    try:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(base), str(target)],
                       capture_output=True, text=True, check=True, timeout=60)
    except FileNotFoundError as error:
        raise SnapshotError(f"qemu-img is not installed (Debian: qemu-utils): {error}") from error
    except subprocess.CalledProcessError as error:
        raise SnapshotError(f"qemu-img could not make an overlay on {base}: {error.stderr.strip()}") from error


def with_own_overlays(spec: MachineSpec, workdir: Path) -> MachineSpec:
    """Every disk QEMU would open with snapshot=on gets an explicit overlay in `workdir` instead, one
    that can be copied at the save point. CD-ROMs (read-only) stay as they are."""
    disks = []
    for index, disk in enumerate(spec.disks):
        if not disk.snapshot or disk.cdrom:
            disks.append(disk)
            continue
        overlay = workdir / f"disk{index}-overlay.qcow2"
        _overlay(disk.path.resolve(), disk.format, overlay)
        disks.append(dataclasses.replace(disk, path=overlay, format="qcow2", snapshot=False))
    return dataclasses.replace(spec, disks=tuple(disks))


def _wait_migration(machine: Machine, deadline: Deadline, what: str) -> dict[str, object]:
    while True:
        try:
            status = machine.qmp.execute("query-migrate")
        except QMP_FAILURES as error:
            raise SnapshotError(f"{what}: QMP failed: {error!r}; {machine.death_reason() or ''}".strip()) from error
        state = status.get("status")
        if state == "completed":
            return dict(status)
        if state in ("failed", "cancelled"):
            raise SnapshotError(f"{what} {state}: {status.get('error-desc', 'QEMU gave no reason')}")
        dead = machine.death_reason()
        if dead is not None:
            raise SnapshotError(f"{what}: {dead}; QEMU said: {machine.output().strip()[-500:]}")
        if deadline.expired():
            raise SnapshotError(f"{what} did not complete within {deadline.budget:.0f} s (status {state})")
        time.sleep(0.01)


def save(machine: Machine, folder: Path, deadline: Deadline) -> Snapshot:
    """Save a running machine (started with `with_own_overlays`) into `folder`; the guest is left paused.
    The folder is private (0700): a RAM dump holds whatever the guest had in memory."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    started = time.monotonic()
    machine.qmp.execute("migrate-set-capabilities", {"capabilities": CAPABILITIES})
    machine.qmp.execute("migrate", {"uri": f"file:{folder / STATE}"})
    status = _wait_migration(machine, deadline, "saving the VM")
    disks = []
    for index, disk in enumerate(machine.spec.disks):
        if disk.path.parent == machine.workdir and disk.format == "qcow2" and not disk.snapshot:
            shutil.copyfile(disk.path, folder / f"disk{index}.qcow2")
            disks.append(index)
    banks = []
    for unit, flash in enumerate(machine.spec.pflash):
        if not flash.readonly:
            shutil.copyfile(flash.path, folder / f"pflash{unit}.fd")
            banks.append(unit)
    meta = {"saved_at": time.time(), "seconds": round(time.monotonic() - started, 3), "disks": disks,
            "pflash": banks, "qemu_version": machine.qemu_version, "status": status.get("ram", {})}
    (folder / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return Snapshot(folder)


def restored_spec(spec: MachineSpec, snapshot: Snapshot, workdir: Path) -> MachineSpec:
    """The spec of a VM that starts from `snapshot`: waiting for the incoming state, each saved disk
    behind a fresh overlay of this VM's own, the saved VARS bank (copied again by Machine.start)."""
    workdir.mkdir(parents=True, exist_ok=True)
    disks: list[Disk] = []
    for index, disk in enumerate(spec.disks):
        saved = snapshot.disk(index)
        if saved is None:
            disks.append(disk)
            continue
        overlay = workdir / f"disk{index}-restored.qcow2"
        _overlay(saved, "qcow2", overlay)
        disks.append(dataclasses.replace(disk, path=overlay, format="qcow2", snapshot=False))
    banks = [Pflash(snapshot.flash(unit) or flash.path, flash.readonly) if not flash.readonly else flash
             for unit, flash in enumerate(spec.pflash)]
    return dataclasses.replace(spec, disks=tuple(disks), pflash=tuple(banks),
                               extra_args=(*spec.extra_args, "-incoming", "defer"))


def resume(machine: Machine, snapshot: Snapshot, deadline: Deadline) -> None:
    """Load the state into a machine started from `restored_spec` and run the guest. Marks the
    timeline's "process" (QMP up) and "incoming" (state loaded) milestones."""
    machine.timeline.mark(Phase.PROCESS, time.monotonic() - machine.t0)
    try:
        machine.qmp.execute("migrate-set-capabilities", {"capabilities": CAPABILITIES})
        machine.qmp.execute("migrate-incoming", {"uri": f"file:{snapshot.state}"})
    except QMP_FAILURES as error:
        raise SnapshotError(f"restoring the VM: QMP failed: {error!r}; {machine.death_reason() or ''}") from error
    _wait_migration(machine, deadline, "restoring the VM")
    machine.timeline.mark(Phase.INCOMING, time.monotonic() - machine.t0)
    machine.qmp.execute("cont")


def nic_placeholders(spec: MachineSpec) -> tuple[MachineSpec, list[object]]:
    """The spec for building a snapshot: a wire NIC gets a fresh link of its own (its peer is kept open
    and returned, to be closed after the save), since the test's own wire belongs to the test's VM."""
    from harness.net import link_pair

    keep: list[object] = []
    nics: list[Nic] = []
    for nic in spec.nics:
        if isinstance(nic, DgramLink):
            ours, peer = link_pair()
            keep += [ours, peer]
            nics.append(dataclasses.replace(nic, fd=ours.fileno()))
        else:
            nics.append(nic)
    return dataclasses.replace(spec, nics=tuple(nics)), keep
