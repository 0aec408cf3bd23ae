"""The record of one boot: what it ran on (accelerator, QEMU build, firmware set and versions, Debian
packages, drift from the lock), its milestones, the snapshot it started from, and its configuration
hash, the key by which the metric history compares boots. Written to the VM's work folder as boot.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.machine import Machine
from harness.spec import MachineSpec
from harness.timeline import Phase
from matrix.history import configuration_hash
from matrix.kinds import Readiness
from matrix.model import Cell


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

    def save(self, machine: Machine) -> None:
        """Take the machine's milestones so far and write boot.json into its work folder."""
        self.milestones = machine.timeline.as_dict()
        (machine.workdir / "boot.json").write_text(json.dumps(self.as_json(), indent=2) + "\n")


@dataclass
class BootOutcome:
    record: BootRecord
    passed: bool
    reason: str
    workdir: Path
    console_tail: str = ""  # a failure's last console lines (escapes removed)


def configuration(cell: Cell, spec: MachineSpec, record: BootRecord, booted: bool) -> str:
    """The configuration hash of a boot: every cell field, the machine as it will start (after any
    customisation), QEMU build, firmware and package versions, and whether it is booted to a shell."""
    return configuration_hash({
        "cell": cell.model_dump(), "spec": spec, "qemu": [record.qemu, record.qemu_version],
        "firmware": [record.firmware_set, record.firmware_versions], "packages": record.packages, "booted": booted,
    })
