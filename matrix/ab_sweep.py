"""The A/B power-cut sweep (issue 24): cut the power during an update, at seeded moments and at every
flush point of a logged update, and prove after each cut that the machine boots a consistent slot,
keeps its data, and takes the next update.

Two methods, as harness/power.py and harness/writelog.py provide them:
- kill: an update runs on the machine's persistent state (harness/state.py) and QEMU is killed at a
  seeded offset into one phase of it (download, verify, entry switch, reboot, bless), the phases
  measured on a calibration update first. What QEMU had handed to the host survives.
- log: one whole update runs with QEMU's write log on the disk; each crash state is the disk rebuilt
  at a flush point (or with a seeded subset of the writes after it lost), powered on with fresh UEFI
  variables (systemd-boot keeps its counters on the ESP, so nothing of the A/B scheme is lost).

After a cut, `check` powers the state on: it must become ready within the tries of the entries on the
disk, on version 1 in slot a or version 2 in slot b (verity makes a mix unbootable, so a boot of a
slot proves the slot whole), with the data partition's note intact; then version 3 must install and
boot, and the data partition must pass e2fsck. tests/vm/test_ab_power_cuts.py runs a seeded sample;
bench/ab_power_cuts.py the sweep, printing the table docs/ab-updates.md shows.
"""

from __future__ import annotations

import random
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from harness.deadline import Deadline
from harness.machine import Machine
from harness.net import UserNet
from harness.payload_server import PayloadServer
from harness.power import cut_into_phase
from harness.spec import MachineSpec
from harness.state import MachineState
from harness.writelog import CrashState, WriteLog, lost_writes, read_log, replay
from images.recipes.ab import DATA_NOTE, READY, TRIES, AbImage, Slot
from images.tools import host_tool
from matrix.lab import Lab
from matrix.model import Cell

BOOT_SECONDS = 240.0  # one OVMF boot under TCG on a busy host, with room
DHCP = "udhcpc -i eth0 -n -q -t 5 -T 2"
# The update's phases, each from the console line that starts it (abagent's states, the slot's init).
PHASES = (
    ("download", r"ab-agent: download attempt 1"),
    ("verify", r"ab-agent: written "),
    ("entry switch", r"ab-agent: verified-verity "),
    ("reboot", r"ab-agent: reboot "),
    ("bless", r"ab: booted slot b version 2"),
)
END_OF_UPDATE = r"BOOTMATRIX-READY ab slot=b version=2"
STAMPED = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)$")


@dataclass(frozen=True)
class Outcome:
    """One cut and what the machine did after it: a row of the sweep's table."""

    method: str  # kill | log
    point: str  # where the cut fell
    phase: str  # the update's phase at the cut (kill: the last phase line seen; log: the state's label)
    booted: str  # "<slot><version>" after the cut: a1 or b2 are consistent; "none (...)": not ready
    data_intact: bool
    next_update: bool  # version 3 installed and booted after it
    fsck_clean: bool

    @property
    def consistent(self) -> bool:
        return self.booted in ("a1", "b2") and self.data_intact and self.next_update and self.fsck_clean


def stamped_lines(console_log: Path) -> list[tuple[float, str]]:
    """(seconds after QEMU started, text) of each console line."""
    lines = []
    for line in console_log.read_text(errors="replace").splitlines():
        found = STAMPED.match(line)
        if found:
            lines.append((float(found.group(1)), found.group(2)))
    return lines


def phase_at(lines: list[tuple[float, str]], at: float) -> str:
    """The update's phase at `at` seconds: the last phase line before it ('before' when none)."""
    phase = "before the update"
    for stamp, text in lines:
        if stamp > at:
            break
        for name, pattern in PHASES:
            if re.search(pattern, text):
                phase = name
    return phase


def serve_slot(server: PayloadServer, slot: Slot) -> str:
    """The guest's URL of `slot` on the payload server: manifest.json and slot.img below it."""
    base = f"{slot.arch}-v{slot.version}" + ("" if slot.healthy else "-unhealthy")
    server.payloads[f"{base}/manifest.json"] = slot.manifest()
    server.payloads[f"{base}/slot.img"] = slot.image.read_bytes()
    return server.url(f"/payload/{base}")


def fsck_data(disk: Path, image: AbImage) -> tuple[bool, str]:
    """e2fsck -fn of the data partition of `disk` (a copy of it beside the disk): clean, and what it said."""
    part = image.partitions["data"]
    copy = disk.with_name("data-partition.img")
    with disk.open("rb") as source, copy.open("wb") as target:
        source.seek(part.start)
        target.write(source.read(part.size))
    e2fsck = host_tool("e2fsck", "package e2fsprogs", "check the A/B data partition")
    checked = subprocess.run([e2fsck, "-fn", str(copy)], capture_output=True, text=True, check=False)
    copy.unlink()
    return checked.returncode == 0, checked.stdout + checked.stderr


class AbRig:
    """The A/B image of one cell, its update payloads on a payload server, and machines on states."""

    def __init__(self, lab: Lab, image: AbImage, firmware: str, server: PayloadServer, workdir: Path):
        self.lab, self.image, self.server, self.workdir = lab, image, server, workdir
        self.firmware = firmware
        self.urls = {version: serve_slot(server, lab.ab_slot(image.arch, version)) for version in ("2", "3")}

    def cell(self, disk: Path) -> Cell:
        return Cell(arch=self.image.arch, firmware=self.firmware, disk={"path": str(disk)}, ready=READY)

    def power_on(self, state: MachineState, name: str, *, disk: Path | None = None, log: Path | None = None,
                 boots: int = 1) -> Machine:
        """A machine on `state` (its disk first copied from `disk`, the image's by default), started and
        waited on to readiness through up to `boots` boots; `log`: QEMU's write log of the disk."""
        def customize(spec: MachineSpec) -> MachineSpec:
            spec = state.adopt(replace(spec, on_reboot="reset"))
            if log is not None:
                (drive,) = spec.disks
                spec = replace(spec, disks=(replace(drive, write_log=log),))
            return spec

        machine, _ = self.lab.machine(self.cell(disk or self.image.disk), self.workdir / name,
                                      nics=(UserNet(restrict=False),), customize=customize, booted=False)
        machine.start()
        try:
            machine.console.expect(READY, Deadline.after(BOOT_SECONDS * boots), what="the A/B image ready")
        except BaseException:
            machine.stop(check=False)
            raise
        return machine

    def run(self, machine: Machine, command: str, seconds: float = 120.0) -> tuple[str, int]:
        return machine.console.run(command, Deadline.after(seconds))

    def start_update(self, machine: Machine, version: str) -> float:
        """DHCP, then send the update command; returns when it was sent (time.monotonic())."""
        output, code = self.run(machine, DHCP)
        if code != 0:
            raise AssertionError(f"DHCP failed: {output[-300:]}")
        machine.console.sendline(f"abagent update {self.urls[version]}")
        return time.monotonic()

    def calibrate(self) -> dict[str, tuple[float, float]]:
        """One clean update from version 1 to 2: each phase's (start, length) in seconds after the
        update command was sent."""
        machine = self.power_on(MachineState(self.workdir / "calibration-state"), "calibration")
        sent = self.start_update(machine, "2") - machine.t0
        machine.console.expect(END_OF_UPDATE, Deadline.after(BOOT_SECONDS))
        machine.stop()
        lines = stamped_lines(machine.workdir / "console.log")
        starts = []
        for name, pattern in PHASES:
            stamp = next(s for s, text in lines if s >= sent and re.search(pattern, text))
            starts.append((name, stamp - sent))
        end = next(s for s, text in lines if s >= sent and re.search(END_OF_UPDATE, text)) - sent
        bounds = [*(start for _, start in starts[1:]), end]
        return {name: (start, max(0.05, stop - start)) for (name, start), stop in zip(starts, bounds, strict=True)}

    def check(self, method: str, point: str, phase: str, *, state: MachineState, name: str,
              disk: Path | None = None) -> Outcome:
        """Power `state` on after a cut and judge it (see the module's docstring)."""
        try:
            machine = self.power_on(state, name, disk=disk, boots=TRIES + 1)
        except Exception as error:  # noqa: BLE001 - a machine that does not come up is this cut's verdict
            return Outcome(method, point, phase, f"none ({type(error).__name__})", False, False, False)
        slot, version = re.findall(READY, machine.console.tail())[-1]
        note, code = self.run(machine, "cat /data/note")
        intact = code == 0 and note == DATA_NOTE
        self.start_update(machine, "3")
        try:
            machine.console.expect(r"BOOTMATRIX-READY ab slot=[ab] version=3", Deadline.after(BOOT_SECONDS))
            updated = True
            self.run(machine, "umount /data")
        except Exception:  # noqa: BLE001 - any failure of the next update is this outcome's verdict
            updated = False
        machine.stop()
        (drive,) = machine.spec.disks
        return Outcome(method, point, phase, f"{slot}{version}", intact, updated, self.fsck_clean(drive.path))

    def fsck_clean(self, disk: Path) -> bool:
        return fsck_data(disk, self.image)[0]

    def kill_sweep(self, phases: dict[str, tuple[float, float]], cuts: int, seed: int,
                   only: tuple[str, ...] = ()) -> Iterator[Outcome]:
        """`cuts` kills, the phases (or `only` these) taken in turn, each at a seeded offset into its
        phase, counted from the console line that begins it (harness/power.py cut_into_phase)."""
        names = list(only or phases)
        patterns = dict(PHASES)
        for number in range(cuts):
            phase = names[number % len(names)]
            _, length = phases[phase]
            state = MachineState(self.workdir / f"kill-{number}-state")
            machine = self.power_on(state, f"kill-{number}")
            sent = self.start_update(machine, "2") - machine.t0
            cut = cut_into_phase(machine, patterns[phase], length, seed * 1000 + number, Deadline.after(BOOT_SECONDS))
            # The table says where the cut really fell, from this run's own console.
            fell = phase_at(stamped_lines(machine.workdir / "console.log"), cut.at)
            point = f"{cut.at - sent:.2f} s into the update ({cut.chosen_by.split(' (')[0]})"
            yield self.check("kill", point, fell, state=state, name=f"kill-{number}-after")

    def logged_update(self) -> tuple[WriteLog, Path]:
        """One whole update (1 -> 2, blessed) with the disk's writes logged: (the log, the disk before)."""
        log = self.workdir / "update.log"
        machine = self.power_on(MachineState(self.workdir / "logged-state"), "logged", log=log)
        self.start_update(machine, "2")
        machine.console.expect(END_OF_UPDATE, Deadline.after(BOOT_SECONDS))
        machine.power_cut()
        return read_log(log), self.image.disk

    def last_write(self, log: WriteLog, durable: int) -> str:
        """Which partition the last write before entry `durable` went to: where in the update it is."""
        for entry in reversed(log.entries[:durable]):
            if entry.changes_disk:
                offset = entry.sector * log.sector_size
                for part in self.image.partitions.values():
                    if part.start <= offset < part.start + part.size:
                        return f"after a write to {part.name}"
                return "after a write to the partition table"
        return "before any write"

    def log_sweep(self, states: list[CrashState], log: WriteLog, base: Path) -> Iterator[Outcome]:
        for number, crash in enumerate(states):
            disk = replay(log, base, self.workdir / f"replay-{number}.img", crash)
            state = MachineState(self.workdir / f"replay-{number}-state")
            point = crash.label or f"flush point: entries 0-{crash.durable - 1} of {len(log.entries)}"
            yield self.check("log", point, self.last_write(log, crash.durable), state=state, name=f"replay-{number}",
                             disk=disk)
            disk.unlink()


def crash_sample(log: WriteLog, seed: int, flush_points: int | None, lost: int) -> list[CrashState]:
    """Every flush point of the log (or a seeded sample of `flush_points` of them), plus `lost` seeded
    lost-write states after seeded flush points that have writes after them."""
    flushes = log.flush_points()
    chosen = flushes if flush_points is None else sorted(random.Random(seed).sample(flushes, min(flush_points,
                                                                                                 len(flushes))))
    states = [CrashState(flush + 1) for flush in chosen]
    picker = random.Random(seed + 1)
    with_tail = [flush for flush in flushes if log.epoch(flush)] or flushes  # flushes with writes after them
    for number in range(lost):
        states.append(lost_writes(log, picker.choice(with_tail), seed * 100 + number))
    return states


def table(outcomes: list[Outcome]) -> str:
    """The sweep's table: one row per cut."""
    rows = ["| method | point | phase | booted | data intact | next update | fsck clean |",
            "|---|---|---|---|---|---|---|"]
    rows += [f"| {o.method} | {o.point} | {o.phase} | {o.booted} | {o.data_intact} | {o.next_update} | "
             f"{o.fsck_clean} |" for o in outcomes]
    return "\n".join(rows)

