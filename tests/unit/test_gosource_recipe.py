"""Pure parts of the mostly-source recipe: what FAT can hold, the census, the cache's fixed times, stubs."""

from __future__ import annotations

from pathlib import Path

from images.recipes.gosource import (
    FIXED_CACHE_TIME,
    _fat_safe,
    census,
    command_sources,
    elf_arch,
    fix_cache_times,
    stub,
)


def _elf(machine: int) -> bytes:
    return b"\x7fELF" + bytes(14) + machine.to_bytes(2, "little") + bytes(40)


def test_fat_leaves_out_what_it_cannot_hold() -> None:
    kept, left_out = _fat_safe(["go/src/a.go", "go/src/A.go", "go/src/x:y", "go/src/dot.", "go/src/b.go"])
    assert kept == ["go/src/A.go", "go/src/b.go"]
    assert left_out == ["go/src/a.go", "go/src/dot.", "go/src/x:y"]


def test_census_counts_sources_and_programs_per_arch() -> None:
    files: dict[str, bytes | Path] = {
        "go/src/fmt/print.go": b"package fmt", "go/src/runtime/race/race_linux_amd64.syso": _elf(0x3E),
        "src/cmds/ls/main.go": b"package main", "linux_amd64/bin/init": _elf(0x3E),
        "linux_riscv64/bin/init": _elf(0xF3), "gocache/linux_amd64/00/x-d": _elf(0x3E),
        "syslinux/ldlinux.c32": _elf(0x03), "ubin/ls": stub("ls"),
    }
    found = census(files)
    assert found["source_files"] == 3 and found["go_files"] == 2 and found["cache_files"] == 1
    assert found["binaries"] == {"amd64": ["linux_amd64/bin/init"], "i386": ["syslinux/ldlinux.c32"],
                                 "riscv64": ["linux_riscv64/bin/init"]}
    assert elf_arch(b"#!/bin/sh\n") is None


def test_cache_entries_lose_their_write_time(tmp_path: Path) -> None:
    entry = tmp_path / "ab" / ("ab" + "0" * 62 + "-a")
    entry.parent.mkdir()
    line = f"v1 {'ab' + '0' * 62} {'cd' + '0' * 62} {1234:20d} {1763800000123456789:20d}\n"
    entry.write_text(line)
    fix_cache_times(tmp_path)
    assert entry.read_text() == line.replace(f"{1763800000123456789:20d}", f"{FIXED_CACHE_TIME:20d}")
    assert (tmp_path / "trim.txt").read_text() == str(FIXED_CACHE_TIME // 10**9)


def test_stubs_name_the_builder_and_a_source_folder() -> None:
    sources = command_sources()
    assert len(sources) >= 21 and sources["gofmt"] == "/go/src/cmd/gofmt" and sources["ls"] == "/src/cmds/ls"
    assert stub("gofmt", sources["gofmt"]) == b"#!/run/bm/bin/bmbuild /go/src/cmd/gofmt\n"
