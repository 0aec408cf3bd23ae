"""Hostile and mistaken input to the CLI: each is one line naming the option, key or path, exit 2 (a
usage error) rather than a traceback, and nothing is lost (issue: hostile input and faults)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from matrix.cli import main, new_folder
from matrix.history import History
from matrix.model import Cell
from tests.unit.test_matrix import write

CELL = '[[cell]]\narch = "x86_64"\nfirmware = "seabios"\n'


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    printed = capsys.readouterr()
    lines = [line for line in printed.out.splitlines() if line.strip()]
    assert "Traceback" not in printed.out + printed.err
    assert len(lines) == 1 and lines[0].startswith("error: "), printed.out
    return lines[0]


@pytest.mark.parametrize("argv", [["list", "--arch", "nope"], ["run", "--arch", "nope", "--dry-run"],
                                  ["run", "--arch", "nope"]])
def test_an_unknown_arch_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "--arch 'nope' is not one of x86_64, aarch64, riscv64" in one_error_line(capsys)


def test_an_arch_no_cell_has_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(write(tmp_path, CELL)), "--arch", "riscv64", "--dry-run"]) == 2
    assert "no cell matches --arch riscv64" in one_error_line(capsys)


@pytest.mark.parametrize("option", [["--memory", "1024"], ["--smp", "2"], ["--append", "quiet"], ["--timeout", "5"]])
def test_own_cell_options_with_a_matrix_file_are_refused(option: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *option, "--dry-run"]) == 2
    assert f"{option[0]} describes a cell of your own artifact" in one_error_line(capsys)


def test_an_unknown_accelerator_is_refused_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BOOTMATRIX_ACCEL", "nope")
    assert main(["run", "--dry-run"]) == 2
    assert "BOOTMATRIX_ACCEL='nope': give tcg or kvm" in one_error_line(capsys)


@pytest.mark.parametrize(("body", "expected"), [
    ('kernel = { image = "minimal" }\nready = "(unclosed"\n', r"cell[0].ready: '(unclosed' is not a valid regular"),
    ('kernel = { image = "minimal" }\nbad = ["ok", "[z-a]"]\n', "cell[0].bad: '[z-a]' is not a valid regular"),
    ("smp = true\n", "cell[0].smp: Input should be a valid integer"),
])
def test_bad_cell_values_name_the_key(tmp_path: Path, body: str, expected: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", str(write(tmp_path, CELL + body))]) == 2
    assert expected in one_error_line(capsys)


def test_a_misspelt_gate_metric_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(write(tmp_path, CELL + "[gates.t_redy]\ntolerance = 0.5\n")), "--dry-run"]) == 2
    line = one_error_line(capsys)
    assert "gates.t_redy: not a metric a run records (known: compile_first_median_s, systemd_firmware_s" in line
    assert "systemd_userspace_s, t_bootloader" in line


@pytest.mark.parametrize(("argv", "words"), [
    (["compare", "--firmware-set", "bookworm", "--firmware-set", "trixie", "--repeat", "0"], "1 or more"),
    (["cache", "prune", "--older-than", "-1"], "0 or more"),
    (["cache", "prune", "--older-than", "nan"], "0 or more"),
])
def test_numbers_out_of_range_are_refused(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and words in capsys.readouterr().err


def test_own_artifact_errors_name_the_option_as_typed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kernel = tmp_path / "Image"
    kernel.write_bytes(b"x")
    assert main(["run", "--arch", "x86_64", "--kernel", str(kernel), "--memory", "-5", "--dry-run"]) == 2
    assert "command line: --memory: Input should be greater than or equal to 64" in one_error_line(capsys)
    assert main(["run", "--arch", "x86_64", "--kernel", str(tmp_path), "--dry-run"]) == 2
    assert f"--kernel: {tmp_path} is a folder, not a file" in one_error_line(capsys)


@pytest.mark.parametrize("how", ["folder", "loop", "latin-1"])
def test_a_matrix_file_that_cannot_be_read_is_one_line(tmp_path: Path, how: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.toml"
    if how == "folder":
        path.mkdir()
    elif how == "loop":
        path.symlink_to(tmp_path / "m.toml")
    else:
        path.write_bytes(CELL.encode() + b'append = "caf\xe9"\n')
    assert main(["list", str(path)]) == 2
    assert str(path) in one_error_line(capsys)


def test_results_that_is_a_file_is_one_line_and_boots_nothing(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    results.write_text("not a folder")
    assert main(["run", "--results", str(results), "--no-history"]) == 2
    assert f"--results: cannot write {results}: it is a file, not a folder" in one_error_line(capsys)


def test_a_cache_that_is_a_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    cache.write_text("x")
    monkeypatch.setenv("BOOTMATRIX_CACHE", str(cache))
    assert main(["cache", "list"]) == 2
    assert f"cannot write {cache}: it is a file, not a folder" in one_error_line(capsys)


@pytest.mark.parametrize("how", ["folder", "corrupt"])
def test_a_history_the_user_named_that_cannot_be_used_is_one_line(
    tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "history.sqlite"
    if how == "folder":
        history.mkdir()
    else:
        history.write_bytes(b"this is not sqlite" * 100)
    assert main(["run", "--history", str(history), "--results", str(tmp_path / "r")]) == 2
    assert str(history) in one_error_line(capsys)
    assert how == "folder" or history.read_bytes().startswith(b"this is not sqlite"), "nothing lost"


def test_a_damaged_default_history_is_set_aside_not_blocking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    history = tmp_path / "history.sqlite"
    history.write_bytes(b"this is not sqlite" * 100)
    monkeypatch.setenv("BOOTMATRIX_HISTORY", str(history))
    History(None).rows(None, None)
    aside = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not sqlite")
    assert sqlite3.connect(history).execute("select count(*) from metrics").fetchone() == (0,)


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path: Path) -> None:
    folders = {new_folder(tmp_path, "run", "--results") for _ in range(5)}
    assert len(folders) == 5 and all(f.is_dir() for f in folders)


def test_an_unexpected_error_fails_its_cell_alone_and_the_report_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug or a full disk in one cell: that cell fails with its reason; the others are reported and
    summary.json and junit.xml are written."""
    import errno

    from matrix.lab import Lab

    def boom(self: Lab, cell: Cell, folder: Path, after_boot: object) -> None:
        if cell.firmware == "seabios":
            raise OSError(errno.ENOSPC, "No space left on device", "/cache/x")
        raise RuntimeError("a bug")

    monkeypatch.setattr(Lab, "boot_and_check", boom)
    matrix = write(tmp_path, CELL + '[[cell]]\narch = "x86_64"\nfirmware = "ovmf"\n')
    assert main(["run", str(matrix), "--results", str(tmp_path / "r"), "--no-history", "-j", "1"]) == 1
    (summary_path,) = (tmp_path / "r").glob("run-*/summary.json")
    rows = {row["cell"]: row for row in json.loads(summary_path.read_text())["cells"]}
    assert rows["x86_64-seabios-direct"]["reason"] == (
        "x86_64-seabios-direct: cannot write /cache/x: no space left on its file system")
    assert rows["x86_64-ovmf-direct"]["reason"] == "unexpected RuntimeError: a bug"
    assert (summary_path.parent / "junit.xml").exists()
    assert "Traceback" not in capsys.readouterr().out
    assert os.path.exists(summary_path)
