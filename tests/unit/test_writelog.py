"""The write-log reader and replayer (harness/writelog.py) on logs written here in QEMU's format; the
VM test (tests/vm/test_power_cuts.py) checks them against logs a real QEMU wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.spec import Disk, HarnessFds, MachineSpec, SpecError, build_argv, validate
from harness.writelog import (
    DISCARD,
    ENTRY,
    FLUSH,
    MAGIC,
    SUPER,
    VERSION,
    CrashState,
    WriteLogError,
    crash_states,
    flush_state,
    lost_writes,
    read_log,
    replay,
)

SECTOR = 512


class LogWriter:
    """Writes entries the way QEMU's blklogwrites does: header sector, then the data."""

    def __init__(self) -> None:
        self.body = b""
        self.count = 0

    def write(self, sector: int, data: bytes) -> None:
        assert len(data) % SECTOR == 0
        self._entry(sector, len(data) // SECTOR, 0, data)

    def discard(self, sector: int, sectors: int) -> None:
        self._entry(sector, sectors, DISCARD, b"")

    def flush(self) -> None:
        self._entry(0, 0, FLUSH, b"")

    def _entry(self, sector: int, sectors: int, flags: int, data: bytes) -> None:
        self.body += ENTRY.pack(sector, sectors, flags, 0).ljust(SECTOR, b"\0") + data
        self.count += 1

    def save(self, path: Path, recorded: int | None = None, superblock: bool = True) -> Path:
        head = SUPER.pack(MAGIC, VERSION, self.count if recorded is None else recorded, SECTOR) if superblock else b""
        path.write_bytes(head.ljust(SECTOR, b"\0") + self.body)
        return path


def block(tag: str) -> bytes:
    return tag.encode().ljust(SECTOR, b".")


@pytest.fixture
def base(tmp_path: Path) -> Path:
    disk = tmp_path / "base.img"
    disk.write_bytes(b"".join(block(f"old{n}") for n in range(8)))
    return disk


def sectors_of(path: Path) -> list[str]:
    data = path.read_bytes()
    return [data[i:i + SECTOR].rstrip(b".").rstrip(b"\0").decode() for i in range(0, len(data), SECTOR)]


def two_epochs(tmp_path: Path) -> Path:
    log = LogWriter()
    log.write(0, block("a0"))
    log.write(1, block("a1") + block("a2"))
    log.flush()
    log.write(3, block("b3"))
    log.write(4, block("b4"))
    log.write(5, block("b5"))
    log.flush()
    log.write(6, block("c6"))
    log.discard(7, 1)
    return log.save(tmp_path / "writes.log", recorded=7)  # the superblock lags: rewritten at the last flush


def test_each_flush_point_has_exactly_the_writes_before_it(tmp_path: Path, base: Path) -> None:
    log = read_log(two_epochs(tmp_path))
    assert (len(log.entries), log.recorded, log.flush_points()) == (9, 7, [2, 6])
    first = sectors_of(replay(log, base, tmp_path / "f1.img", flush_state(log, 2)))
    assert first == ["a0", "a1", "a2", "old3", "old4", "old5", "old6", "old7"]
    second = sectors_of(replay(log, base, tmp_path / "f2.img", flush_state(log, 6)))
    assert second == ["a0", "a1", "a2", "b3", "b4", "b5", "old6", "old7"]
    assert base.read_bytes() == b"".join(block(f"old{n}") for n in range(8)), "the base is never written"


def test_entries_after_the_superblocks_count_are_read_and_a_discard_reads_as_zeroes(
        tmp_path: Path, base: Path) -> None:
    log = read_log(two_epochs(tmp_path))
    everything = replay(log, base, tmp_path / "all.img", CrashState(len(log.entries)))
    assert sectors_of(everything)[6:] == ["c6", ""]


def test_lost_writes_keep_a_seeded_subset_of_the_unflushed_ones_only(tmp_path: Path, base: Path) -> None:
    log = read_log(two_epochs(tmp_path))
    seen = set()
    for seed in range(40):
        state = lost_writes(log, 2, seed)
        assert state == lost_writes(log, 2, seed), "the same seed gives the same state"
        assert set(state.kept) <= {3, 4, 5} and state.durable == 3 and state.dropped == 3 - len(state.kept)
        disk = sectors_of(replay(log, base, tmp_path / "lost.img", state))
        assert disk[:3] == ["a0", "a1", "a2"], "what the flush made durable is never lost"
        assert disk[6:] == ["old6", "old7"], "nothing of the next epoch"
        for n in (3, 4, 5):
            assert disk[n] == (f"b{n}" if n in state.kept else f"old{n}")
        seen.add(state.kept)
    assert () in seen and any(len(kept) == 3 for kept in seen) and len(seen) > 8, seen


def test_crash_states_cover_every_flush_and_each_unflushed_tail(tmp_path: Path) -> None:
    log = read_log(two_epochs(tmp_path))
    states = list(crash_states(log, seed=7, lost_per_flush=2))
    assert [s.durable for s in states] == [3, 7, 0, 0, 3, 3, 7, 7]
    assert all(s.label for s in states)


def test_a_log_cut_while_qemu_wrote_an_entry_ends_before_it(tmp_path: Path) -> None:
    path = two_epochs(tmp_path)
    path.write_bytes(path.read_bytes() + ENTRY.pack(2, 4, 0, 0).ljust(SECTOR, b"\0") + block("partial"))
    assert len(read_log(path).entries) == 9, "an entry whose data is cut short is the cut, not a write"


def test_a_log_without_a_superblock_yet_is_read_with_the_configured_sector_size(tmp_path: Path) -> None:
    log = LogWriter()
    log.write(2, block("x"))
    parsed = read_log(log.save(tmp_path / "young.log", superblock=False))
    assert [(e.sector, e.sectors) for e in parsed.entries] == [(2, 1)] and parsed.flush_points() == []


@pytest.mark.parametrize("content, words", [
    (b"", "too short"),
    (SUPER.pack(0x1234, VERSION, 0, SECTOR).ljust(SECTOR, b"\0"), "not a write log"),
    (SUPER.pack(MAGIC, 2, 0, SECTOR).ljust(SECTOR, b"\0"), "version 2"),
    (SUPER.pack(MAGIC, VERSION, 0, 100).ljust(SECTOR, b"\0"), "sector size 100"),
])
def test_what_is_not_a_write_log_is_refused_naming_the_file(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "odd.log"
    path.write_bytes(content)
    with pytest.raises(WriteLogError, match=rf"odd\.log: .*{words}"):
        read_log(path)


def test_a_logged_disk_goes_through_a_blklogwrites_node_with_its_paths_quoted(tmp_path: Path) -> None:
    disk = Disk(Path("/d/a,b.img"), snapshot=False, write_log=Path("/l/w,x.log"))
    argv = build_argv(MachineSpec("x86_64", "q35", disks=(disk,)), ["qemu"], [], HarnessFds(3, 4, tmp_path / "p"))
    blockdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-blockdev"]
    assert blockdevs == [
        "driver=file,node-name=disk0-file,filename=/d/a,,b.img",
        "driver=raw,node-name=disk0-format,file=disk0-file",
        "driver=file,node-name=disk0-log,filename=/l/w,,x.log",
        "driver=blklogwrites,node-name=disk0,file=disk0-format,log=disk0-log,log-sector-size=512",
    ]
    assert "virtio-blk-pci,drive=disk0" in argv and "-drive" not in argv


def test_a_write_log_on_a_disk_not_written_in_place_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "d.img"
    image.write_bytes(bytes(SECTOR))
    with pytest.raises(SpecError, match=r"d\.img: a write log needs a writable disk written in place"):
        validate(MachineSpec("x86_64", "q35", disks=(Disk(image, write_log=tmp_path / "w.log"),)))


def test_a_machine_state_copies_writable_disks_and_vars_once_and_keeps_them(tmp_path: Path) -> None:
    from harness.spec import Pflash
    from harness.state import MachineState

    files = {name: tmp_path / name for name in ("code.fd", "vars.fd", "root.img", "cd.iso")}
    for name, path in files.items():
        path.write_bytes(name.encode())
    spec = MachineSpec("x86_64", "q35", pflash=(Pflash(files["code.fd"], True), Pflash(files["vars.fd"], False)),
                       disks=(Disk(files["root.img"]), Disk(files["cd.iso"], interface="scsi-cd", readonly=True)))
    state = MachineState(tmp_path / "state")
    first = state.adopt(spec)
    assert first.pflash[0] == spec.pflash[0] and first.disks[1] == spec.disks[1], "read-only parts stay"
    vars_bank, root = first.pflash[1], first.disks[0]
    assert vars_bank.in_place and vars_bank.path.parent == root.path.parent == state.folder
    assert not root.snapshot, "written in place, not through an overlay"
    vars_bank.path.write_bytes(b"written by boot 1")
    again = state.adopt(spec)
    assert again == first and vars_bank.path.read_bytes() == b"written by boot 1", "the same state, not a new copy"
    assert state.adopt(first) == first
    assert files["vars.fd"].read_bytes() == b"vars.fd", "the template is never written"
