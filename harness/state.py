"""A machine's persistent state across power cycles: its own writable disks and VARS bank, kept in one
folder, so that a machine powered on again (after a cut, a power-off or a reboot that ends QEMU) finds
what the last one left.

Without it a VM's disks are `snapshot=on` overlays and its VARS bank a fresh copy of the firmware's
template (harness/machine.py): nothing survives QEMU. `MachineState(folder).adopt(spec)` copies each
writable disk and writable flash bank into `folder` the first time, and points the spec at those
copies, written in place, every time: one state per test, the templates never written.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from harness.spec import MachineSpec, Pflash


@dataclasses.dataclass(frozen=True)
class MachineState:
    folder: Path

    def adopt(self, spec: MachineSpec) -> MachineSpec:
        """`spec` with its writable disks and VARS bank replaced by this state's copies (made now, the
        first time). Read-only disks and CD-ROMs, and the firmware's CODE bank, stay as they are."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        disks = tuple(disk if disk.readonly or disk.cdrom else
                      dataclasses.replace(disk, path=self._copy(f"disk{index}", disk.path), snapshot=False)
                      for index, disk in enumerate(spec.disks))
        banks = tuple(flash if flash.readonly else
                      Pflash(self._copy(f"pflash{unit}", flash.path), readonly=False, in_place=True)
                      for unit, flash in enumerate(spec.pflash))
        return dataclasses.replace(spec, disks=disks, pflash=banks)

    def _copy(self, role: str, template: Path) -> Path:
        if template.parent == self.folder:
            return template  # already this state's own
        kept = self.folder / f"{role}-{template.name}"
        if not kept.exists():
            partial = kept.with_name(kept.name + ".part")
            shutil.copyfile(template, partial)
            partial.rename(kept)  # a copy cut short is never taken for the state
        return kept
