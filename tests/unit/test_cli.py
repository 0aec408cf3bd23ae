"""The CLI's cheap paths: listing cells, and a bad matrix file as exit code 2 with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

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
