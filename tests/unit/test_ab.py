"""The A/B image's pure parts (images/recipes/ab.py) and the sweep's judging (matrix/ab_sweep.py): the
GPT the disk writer makes, the entries it starts with, the verity spec of a slot, and how a cut's phase
and verdict are read. The VM tests (tests/vm/test_ab_*.py) boot what these build."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from itertools import pairwise
from pathlib import Path

import pytest

from images.recipes.ab import (
    MIB,
    READY,
    SLOT_MIB,
    Slot,
    entry_text,
    fixed_uuid,
    layout,
    syslinux_cfg,
    verity_format,
    write_data_partition,
    write_disk,
)
from matrix.ab_sweep import Outcome, phase_at, stamped_lines, table

SLOT = Slot("x86_64", "1", Path("/nonexistent"), 4096, "0" * 64, f"1:1:{'ab' * 32}:{'cd' * 32}", True)


def test_the_partitions_are_mib_aligned_in_order_and_fit_their_slots() -> None:
    parts = layout(64)
    assert [p.name for p in parts] == ["esp", "slot-a", "slot-b", "data"]
    assert [p.number for p in parts] == [1, 2, 3, 4]
    assert parts[0].start == MIB and all(p.start % MIB == 0 for p in parts)
    assert all(a.start + a.size == b.start for a, b in pairwise(parts))
    assert parts[1].size == parts[2].size == SLOT_MIB * MIB


@pytest.mark.skipif(shutil.which("sfdisk") is None and not Path("/usr/sbin/sfdisk").exists(), reason="no sfdisk")
def test_the_disk_has_fixed_guids_names_and_the_esp_is_bios_bootable_only_with_boot_code(tmp_path: Path) -> None:
    parts = layout(64)
    esp = tmp_path / "esp.img"
    esp.write_bytes(b"E" * 4096)
    for boot_code in (None, b"\x90" * 440):
        disk = tmp_path / "disk.img"
        write_disk(disk, "x86_64", parts, {"esp": esp}, boot_code)
        table_json = subprocess.run([shutil.which("sfdisk") or "/usr/sbin/sfdisk", "--json", str(disk)],
                                    capture_output=True, text=True, check=True).stdout
        found = json.loads(table_json)["partitiontable"]
        assert found["id"] == fixed_uuid("x86_64", "disk").upper()
        assert [p["name"] for p in found["partitions"]] == ["esp", "slot-a", "slot-b", "data"]
        assert [p["uuid"] for p in found["partitions"]] == [fixed_uuid("x86_64", p.name).upper() for p in parts]
        assert ("attrs" in found["partitions"][0]) == (boot_code is not None)
        data = disk.read_bytes()
        assert data[MIB:MIB + 4096] == b"E" * 4096, "the ESP's contents at its offset"
        assert (data[:440] == b"\x90" * 440) == (boot_code is not None)


def test_a_partition_larger_than_its_slot_is_refused_naming_it(tmp_path: Path) -> None:
    big = tmp_path / "slot.img"
    with big.open("wb") as handle:
        handle.truncate(SLOT_MIB * MIB + 1)
    with pytest.raises(ValueError, match=r"slot\.img is larger than partition slot-a"):
        write_disk(tmp_path / "disk.img", "x86_64", layout(64), {"slot-a": big})


def test_the_first_entry_binds_slot_a_and_its_root_hash() -> None:
    text = entry_text("x86_64", 1, "a", SLOT).decode()
    assert "sort-key bootmatrix-ab\nversion 1\n" in text
    options = re.search(r"^options (.*)$", text, re.M)
    assert options is not None
    words = options.group(1).split()
    assert "bootmatrix.slot=a" in words and "bootmatrix.entry=ab-1" in words
    assert f"bootmatrix.verity={SLOT.verity}" in words and "console=ttyS0" in words


def test_the_bios_path_lets_the_initramfs_choose() -> None:
    cfg = syslinux_cfg("x86_64").decode()
    assert "LINUX /ab/linux" in cfg and "INITRD /ab/initrd" in cfg
    assert "bootmatrix.select=initramfs" in cfg and "bootmatrix.slot" not in cfg


@pytest.mark.skipif(shutil.which("veritysetup") is None, reason="no veritysetup (cryptsetup-bin)")
def test_the_verity_spec_names_the_tree_after_the_data_and_a_changed_block_changes_the_root(tmp_path: Path) -> None:
    roots = []
    for fill in (b"a", b"b"):
        image = tmp_path / f"{fill.decode()}.img"
        image.write_bytes(fill * (4096 * 8))
        spec = verity_format(image, 4096 * 8, "00" * 32, "unit test")
        blocks, start, salt, root = spec.split(":")
        assert (blocks, start, salt) == ("8", "8", "00" * 32)
        assert image.stat().st_size > 4096 * 8, "the hash tree follows the data"
        roots.append(root)
    assert roots[0] != roots[1] and all(len(r) == 64 for r in roots)


def test_the_phase_of_a_cut_is_the_last_phase_line_before_it(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("[   10.000] BOOTMATRIX-READY ab slot=a version=1\n"
                   "[   12.000] ab-agent: download attempt 1\n"
                   "[   12.500] ab-agent: written 3723264 bytes to /dev/vda3\n"
                   "[   13.000] ab-agent: verified-verity root hash x\n"
                   "[   13.100] ab-agent: reboot into ab-2+3-0.conf\n"
                   "[   25.000] ab: booted slot b version 2 entry ab-2\n")
    lines = stamped_lines(log)
    assert len(lines) == 6
    assert [phase_at(lines, t) for t in (11.0, 12.2, 12.7, 13.05, 20.0, 26.0)] == [
        "before the update", "download", "verify", "entry switch", "reboot", "bless"]


def test_only_the_old_or_the_new_slot_whole_with_everything_else_passing_is_consistent() -> None:
    good = Outcome("kill", "p", "download", "a1", True, True, True)
    assert good.consistent
    assert Outcome("kill", "p", "bless", "b2", True, True, True).consistent
    for bad in (Outcome("kill", "p", "x", "b1", True, True, True), Outcome("log", "p", "x", "a1", False, True, True),
                Outcome("log", "p", "x", "a1", True, False, True), Outcome("log", "p", "x", "a1", True, True, False)):
        assert not bad.consistent
    assert table([good]).splitlines()[2] == "| kill | p | download | a1 | True | True | True |"


def test_the_ready_line_names_the_slot_and_the_version() -> None:
    found = re.search(READY, "BOOTMATRIX-READY ab slot=b version=2")
    assert found is not None and found.group("slot", "version") == ("b", "2")


@pytest.mark.skipif(shutil.which("debugfs") is None and not Path("/usr/sbin/debugfs").exists(), reason="no e2fsprogs")
def test_the_data_partition_is_the_same_bytes_when_built_a_second_later(tmp_path: Path) -> None:
    """mkfs.ext4 -d copies the note's ctime, the moment it was written: the recipe must fix it (a fresh
    clone's bootmatrix verify found it once). A second apart, so the two notes' ctimes differ."""
    digests = []
    for n in range(2):
        if n:
            time.sleep(1.1)
        folder = tmp_path / str(n)
        folder.mkdir()
        write_data_partition(folder / "data.img", "x86_64")
        digests.append(hashlib.sha256((folder / "data.img").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
