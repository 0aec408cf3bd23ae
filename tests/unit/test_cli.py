"""The CLI's cheap paths: listing cells, and a bad matrix file as exit code 2 with the key named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from images.store import Store
from matrix.cli import main


def test_list_shows_the_default_cells(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    shown = capsys.readouterr().out
    for cell_id in ("x86_64-seabios-direct", "aarch64-virt-direct", "riscv64-opensbi-direct"):
        assert cell_id in shown


def test_bad_matrix_is_exit_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[cell]]\narch = "x86_64"\nfirmware = "seabios"\ncolour = "red"\n')
    assert main(["run", str(bad)]) == 2
    assert "cell[0].colour: unknown key" in capsys.readouterr().out


def test_cache_list_and_prune_on_an_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BOOTMATRIX_CACHE", str(tmp_path / "cache"))
    assert main(["cache", "list"]) == 0
    assert main(["cache", "prune", "--all"]) == 0
    assert "removed 0 entries" in capsys.readouterr().out


def test_cache_list_shows_each_entry_and_prune_removes_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BOOTMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    store = Store(tmp_path / "cache")
    def writes(megabytes: int) -> Callable[[Path], None]:
        def build(content: Path) -> None:
            (content / "blob").write_bytes(bytes(megabytes * 1_000_000))
        return build

    for name, megabytes in (("demo-kernel", 2), ("demo-stick", 3)):
        store.get(name, {"n": megabytes}, writes(megabytes))
    keys = {e.manifest()["name"]: e.key for e in store.entries()}
    assert main(["cache", "list"]) == 0
    listing = capsys.readouterr().out
    for name, size in (("demo-kernel", "2.0 MB"), ("demo-stick", "3.0 MB")):
        row = next(line for line in listing.splitlines() if keys[name][:16] in line)
        assert name in row and size in row, listing
    assert main(["cache", "prune", "--all"]) == 0
    pruned = capsys.readouterr().out
    assert "removed 2 entries: " in pruned and all(key[:12] in pruned for key in keys.values()), pruned
    assert store.entries() == []


def test_shipped_matrices_are_named_and_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["list", "gosource"]) == 0
    shown = capsys.readouterr().out
    assert "riscv64-opensbi-direct-gosource" in shown
    assert "shipped matrices (bootmatrix run NAME" in shown and "gosource (" in shown and "examples (" in shown
    (tmp_path / "gosource").write_text('[[cell]]\narch = "x86_64"\nfirmware = "seabios"\n')
    assert main(["list", "gosource"]) == 0, "a file of that name here is a path, as before"
    assert "x86_64-seabios-direct" in capsys.readouterr().out
    assert main(["list", "./nope"]) == 2
    assert "nope: no such matrix file" in capsys.readouterr().out


def test_lock_set_refuses_an_unknown_set_before_writing_anything(capsys: pytest.CaptureFixture[str]) -> None:
    """A set that no suite has is named in one line, and neither lock file is touched (the set is checked
    before the mirror is even looked up)."""
    locks = [Path(__file__).parents[2] / "images/debian" / f"{suite}.lock.json" for suite in ("trixie", "bookworm")]
    before = [lock.read_bytes() for lock in locks]
    assert main(["lock", "--set", "no-such-set"]) != 0
    said = capsys.readouterr()
    assert "--set no-such-set: no such package set in trixie.lock.json or bookworm.lock.json" in said.out + said.err
    assert [lock.read_bytes() for lock in locks] == before
