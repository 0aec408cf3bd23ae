"""A disk's crash states, rebuilt from the log of every write the guest made (QEMU's blklogwrites).

QEMU's `blklogwrites` block driver (Disk.write_log in harness/spec.py) sits between the guest's drive
and its file and appends each request that completed to a log file on the host, in the format of
Linux's dm-log-writes: sector 0 holds a superblock (magic, version, entry count, sector size); from
sector 1 each entry is one sector of header (sector, sector count, flags) followed by its data, except
for a discard or a flush, which carry none. A write of zeroes is logged as a write of zero bytes.

From that log and the disk as it was before the boot, `replay` rebuilds the disk as it stood at any
moment a power cut could have left it:

- at a flush point: every write logged before the flush reached the medium, nothing after it did;
- with lost writes: the writes since the last flush sat in a volatile write cache when the power
  went, so any subset of them may have reached the medium, in any order (the CrashMonkey/xfstests
  generic/482 model). `lost_writes` picks that subset and order from a seed, so a failing state is
  reproduced from its seed alone.

What the model assumes, and where it is stricter or looser than a real disk:
- a write logged before a flush entry counts as flushed by it. QEMU logs a request once it has
  completed; a write that completed while the flush was in flight is not guaranteed durable by the
  flush on real hardware, so this model keeps a little more than a disk must.
- QEMU logs no FUA flag (its entries carry 0 for writes), so a forced-unit-access write is treated as
  an ordinary cached one. virtio-blk has no FUA at all (a guest's FUA becomes a write and a flush),
  so for virtio disks nothing is lost by this.
- a discarded range reads back as zeroes (what a hole punched in a raw file gives).
- the superblock's entry count is rewritten only at a flush and every 4096 entries, so the reader
  walks the entries themselves until the log ends (zeroes or end of file); a last entry whose data
  was cut short (QEMU killed while it wrote its log) is the cut itself and is not counted.
"""

from __future__ import annotations

import random
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0x6A736677736872
VERSION = 1
FLUSH, FUA, DISCARD, MARK = 1, 2, 4, 8
KNOWN_FLAGS = FLUSH | FUA | DISCARD | MARK
SUPER = struct.Struct("<QQQI")  # magic, version, entry count, sector size
ENTRY = struct.Struct("<QQQQ")  # sector, sector count, flags, data length (a mark's text)


class WriteLogError(Exception):
    """The file is not a write log this module can read (wrong magic, version or sector size)."""


@dataclass(frozen=True)
class LoggedWrite:
    """One entry of the log: a write (with its data at `data_at` in the log file), a discard, a
    flush or a mark. `sector` and `sectors` are in the log's sector size."""

    index: int
    sector: int
    sectors: int
    flags: int
    data_at: int

    @property
    def flush(self) -> bool:
        return bool(self.flags & FLUSH)

    @property
    def changes_disk(self) -> bool:
        """A write or a discard (a flush or a mark changes no byte)."""
        return self.sectors > 0 and not self.flags & MARK


@dataclass(frozen=True)
class WriteLog:
    path: Path
    sector_size: int
    entries: tuple[LoggedWrite, ...]
    recorded: int  # the superblock's own count: it lags the entries after the last flush

    def flush_points(self) -> list[int]:
        """Index of every flush entry, in log order."""
        return [entry.index for entry in self.entries if entry.flush]

    def epoch(self, flush: int | None) -> list[LoggedWrite]:
        """The writes after flush entry `flush` (None: from the start) up to the next flush or the end:
        what a volatile write cache could have held when the power went."""
        start = 0 if flush is None else flush + 1
        after = []
        for entry in self.entries[start:]:
            if entry.flush:
                break
            if entry.changes_disk:
                after.append(entry)
        return after


@dataclass(frozen=True)
class CrashState:
    """A disk as a power cut may have left it: every entry before `durable` applied, then `kept` (the
    indexes of writes from the unflushed tail that did reach the medium) in that order. `label` says
    which state it is in a person's words; `dropped` counts the unflushed writes it loses."""

    durable: int
    kept: tuple[int, ...] = ()
    label: str = ""
    dropped: int = 0


def read_log(path: Path, sector_size: int = 512) -> WriteLog:
    """Parse a blklogwrites log; WriteLogError names the file when it is not one. `sector_size` is the
    one the log was made with (Disk.write_log: 512), used when QEMU has not yet written the superblock
    (no flush and fewer than 4096 entries since the boot: sector 0 is still zeroes)."""
    with path.open("rb") as handle:
        head = handle.read(SUPER.size)
        if len(head) < SUPER.size:
            raise WriteLogError(f"{path}: {len(head)} bytes, too short for a write log's superblock")
        magic, version, recorded, sector_size = (
            (MAGIC, VERSION, 0, sector_size) if head == bytes(SUPER.size) else SUPER.unpack(head))
        if magic != MAGIC:
            raise WriteLogError(f"{path}: not a write log (magic {magic:#x}, want {MAGIC:#x})")
        if version != VERSION:
            raise WriteLogError(f"{path}: write log version {version}, only {VERSION} is known")
        if sector_size < 512 or sector_size & (sector_size - 1):
            raise WriteLogError(f"{path}: write log sector size {sector_size} is not a power of two >= 512")
        size = path.stat().st_size
        entries: list[LoggedWrite] = []
        at = sector_size
        while at + ENTRY.size <= size:
            handle.seek(at)
            sector, sectors, flags, data_len = ENTRY.unpack(handle.read(ENTRY.size))
            if (sector, sectors, flags, data_len) == (0, 0, 0, 0) or flags & ~KNOWN_FLAGS:
                break  # past the last entry: zeroes (a log cut short) or what no entry holds
            carried = 0 if flags & (DISCARD | FLUSH) else sectors * sector_size
            if flags & MARK:
                carried = -(-data_len // sector_size) * sector_size
            data_at = at + sector_size
            if data_at + carried > size:
                break  # its data never reached the log: the cut came while QEMU wrote it
            entries.append(LoggedWrite(len(entries), sector, sectors, flags, data_at))
            at = data_at + carried
    return WriteLog(path, sector_size, tuple(entries), recorded)


def flush_state(log: WriteLog, flush: int) -> CrashState:
    """The disk just after flush entry `flush`, with nothing of what came later."""
    return CrashState(flush + 1, (), f"flush {log.flush_points().index(flush) + 1} (entry {flush})")


def lost_writes(log: WriteLog, flush: int | None, seed: int) -> CrashState:
    """The disk at a cut after flush entry `flush` (None: before the first), with a seeded subset of
    the writes since then applied in a seeded order: a volatile cache that had written some of them."""
    pick = random.Random(f"{log.path.name}/{flush}/{seed}")
    tail = [entry.index for entry in log.epoch(flush)]
    kept = [index for index in tail if pick.random() < 0.5]
    pick.shuffle(kept)
    durable = 0 if flush is None else flush + 1
    where = "the start" if flush is None else f"entry {flush}"
    return CrashState(durable, tuple(kept), f"{len(kept)} of {len(tail)} unflushed writes after {where}, seed {seed}",
                      len(tail) - len(kept))


def crash_states(log: WriteLog, seed: int, lost_per_flush: int = 1) -> Iterator[CrashState]:
    """Every flush point, then `lost_per_flush` seeded lost-write states after each flush (and before
    the first) whose tail holds writes."""
    flushes = log.flush_points()
    for flush in flushes:
        yield flush_state(log, flush)
    after: list[int | None] = [None, *flushes]
    for previous in after:
        if log.epoch(previous):
            for draw in range(lost_per_flush):
                yield lost_writes(log, previous, seed * 1000 + draw)


def replay(log: WriteLog, base: Path, out: Path, state: CrashState) -> Path:
    """Write `out`: the raw disk `base` (as it was before the logged boot) with `state`'s writes."""
    shutil.copyfile(base, out)
    chosen = [*log.entries[: state.durable], *(log.entries[index] for index in state.kept)]
    with log.path.open("rb") as source, out.open("r+b") as disk:
        for entry in chosen:
            if not entry.changes_disk:
                continue
            length = entry.sectors * log.sector_size
            disk.seek(entry.sector * log.sector_size)
            if entry.flags & DISCARD:
                disk.write(bytes(length))
                continue
            source.seek(entry.data_at)
            disk.write(source.read(length))
    return out
