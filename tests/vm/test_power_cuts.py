"""Power cuts and lost writes against a real QEMU (issue 24's harness tools): a guest writes known
blocks to a disk logged by QEMU's blklogwrites driver, the power is cut when the console says so, and
every crash state rebuilt from the log (harness/writelog.py) is checked against what the guest did.

The workload, on the raw disk /dev/vda (no filesystem, so every write and flush is the guest's own):
three generations of sectors 0-3, each one 2 KiB write made durable with fsync (a flush), then a fourth
generation as four 512-byte writes with no flush: the volatile tail a cut may lose. The kernel writes
each of those back as the whole 4 KiB page (sectors 0-7) when dd closes the device, so the k-th write
of the tail leaves sectors 0..k at gen4 and the rest at gen3.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

import pytest

from harness.power import cut_when
from harness.spec import Disk, MachineSpec
from harness.state import MachineState
from harness.writelog import CrashState, crash_states, lost_writes, read_log, replay
from matrix.model import Cell

pytestmark = pytest.mark.bootmatrix_cold  # a logged disk is this boot's own: nothing to restore
CELL = Cell(arch="x86_64", firmware="seabios", media="direct")
SECTOR = 512
WORKLOAD = (
    "for g in 1 2 3; do yes gen$g | head -c 2048 > /tmp/g; "
    "dd if=/tmp/g of=/dev/vda bs=2048 count=1 conv=notrunc,fsync 2>/dev/null || echo dd''-failed; done; "
    "yes gen4 | head -c 512 > /tmp/b; "
    "for n in 0 1 2 3; do dd if=/tmp/b of=/dev/vda bs=512 seek=$n count=1 conv=notrunc 2>/dev/null "
    "|| echo dd''-failed; done; echo cut''-now"
)


def tags(disk: Path) -> list[str]:
    """The generation in each of the first four sectors ('old' for the disk's first contents)."""
    data = disk.read_bytes()
    found = [re.findall(rb"gen\d|old", data[n * SECTOR:(n + 1) * SECTOR]) for n in range(4)]
    assert all(len(set(words)) == 1 for words in found), f"a sector of two generations: {found}"
    return [words[0].decode() for words in found]


@pytest.fixture
def data_disk(tmp_path: Path) -> Path:
    disk = tmp_path / "data.img"
    disk.write_bytes(b"old\n" * (1 << 18))  # 1 MiB
    return disk


def logged(disk: Path, log: Path | None):
    def customize(spec: MachineSpec) -> MachineSpec:
        return replace(spec, disks=(*spec.disks, Disk(disk, snapshot=False, write_log=log)))

    return customize


def test_every_flush_point_and_lost_write_state_of_a_real_log_is_what_the_guest_wrote(
        bootmatrix_vms, data_disk: Path, tmp_path: Path) -> None:
    base = tmp_path / "base.img"
    base.write_bytes(data_disk.read_bytes())
    log_path = tmp_path / "data.log"
    guest = bootmatrix_vms(CELL, name="writer", customize=logged(data_disk, log_path))
    guest.machine.console.sendline(WORKLOAD)
    cut = cut_when(guest.machine, r"cut-now|dd-failed", guest.deadline())
    assert "dd-failed" not in guest.machine.tail(), guest.machine.tail()
    assert guest.end is not None and guest.end.abnormal is None and guest.machine.cut_at == cut.at

    log = read_log(log_path)
    assert len(log.entries) >= 10, "3 writes + 3 flushes + 4 unflushed writes at least"
    # Everything the log holds, replayed, is the disk QEMU left: SIGKILL loses nothing QEMU had handed
    # to the host, so the file on disk is the all-writes-survived state, byte for byte.
    everything = replay(log, base, tmp_path / "everything.img", CrashState(len(log.entries)))
    assert everything.read_bytes() == data_disk.read_bytes()
    assert tags(data_disk) == ["gen4"] * 4

    seen = []
    for flush in log.flush_points():
        disk = tags(replay(log, base, tmp_path / "flush.img", CrashState(flush + 1)))
        assert len(set(disk)) == 1, f"flush entry {flush}: a torn generation {disk}"
        seen.append(disk[0])
    assert [g for g in ("gen1", "gen2", "gen3") if g in seen] == ["gen1", "gen2", "gen3"], seen
    assert seen == sorted(seen, key=("old", "gen1", "gen2", "gen3").index), "flush points in write order"

    last = log.flush_points()[-1]
    tail = [entry.index for entry in log.epoch(last)]
    assert len(tail) == 4, "the four unflushed writes come after the last flush"
    outcomes = set()
    for seed in range(16):
        state = lost_writes(log, last, seed)
        disk = tags(replay(log, base, tmp_path / "lost.img", state))
        # The page the cache wrote last wins: the k-th write of the tail has sectors 0..k at gen4.
        written = tail.index(state.kept[-1]) + 1 if state.kept else 0
        assert disk == ["gen4"] * written + ["gen3"] * (4 - written), (state.label, disk)
        outcomes.add(written)
    assert len(outcomes) >= 3, f"the seeds reach several lost-write states: {outcomes}"
    states = list(crash_states(log, seed=1))
    assert len(states) > len(log.flush_points()), "flush points plus lost-write states"


def test_a_power_cut_machine_powers_on_again_with_the_same_disk(bootmatrix_vms, data_disk: Path) -> None:
    """A cut is no failure of the test, and the same disk boots again (all writes QEMU passed on kept)."""
    first = bootmatrix_vms(CELL, name="first", customize=logged(data_disk, None))
    first.run("yes gen7 | head -c 512 | dd of=/dev/vda bs=512 count=1 conv=notrunc 2>/dev/null")
    first.machine.power_cut()
    assert first.end is not None and not first.end.by_harness and first.end.abnormal is None
    assert '"power_cut": ' in (first.workdir / "result.json").read_text()
    second = bootmatrix_vms(CELL, name="second", customize=logged(data_disk, None))
    output, code = second.run("head -c 4 /dev/vda")
    assert (output, code) == ("gen7", 0)


def test_a_machine_state_keeps_its_disk_and_vars_bank_across_power_cycles(
        bootmatrix_vms, bootmatrix_lab, data_disk: Path, tmp_path: Path) -> None:
    """MachineState: the second power-on finds the first one's disk writes and UEFI variable writes
    (OVMF writes its variable store on every boot), while the templates stay as they were."""
    cell = Cell(arch="x86_64", firmware="ovmf", media="direct")
    state = MachineState(tmp_path / "state")
    template = data_disk.read_bytes()

    def customize(spec: MachineSpec) -> MachineSpec:
        return state.adopt(replace(spec, disks=(*spec.disks, Disk(data_disk))))

    first = bootmatrix_vms(cell, name="first", customize=customize)
    (bank,) = [flash for flash in first.machine.spec.pflash if not flash.readonly]
    (disk,) = first.machine.spec.disks
    assert bank.in_place and bank.path.parent == disk.path.parent == state.folder
    vars_template = bootmatrix_lab.spec(cell, "tcg").pflash[1].path
    before = hashlib.sha256(vars_template.read_bytes()).hexdigest()
    first.run("yes gen8 | head -c 512 | dd of=/dev/vda bs=512 count=1 conv=notrunc,fsync 2>/dev/null")
    first.machine.power_cut()
    after_first = hashlib.sha256(bank.path.read_bytes()).hexdigest()
    second = bootmatrix_vms(cell, name="second", customize=customize)
    assert [f.path for f in second.machine.spec.pflash] == [f.path for f in first.machine.spec.pflash]
    assert second.run("head -c 4 /dev/vda") == ("gen8", 0)
    second.machine.stop()
    after_second = hashlib.sha256(bank.path.read_bytes()).hexdigest()
    assert hashlib.sha256(vars_template.read_bytes()).hexdigest() == before, "the VARS template is never written"
    assert len({before, after_first, after_second}) == 3, "each boot wrote the one persistent bank"
    assert data_disk.read_bytes() == template, "the template disk is never written"
