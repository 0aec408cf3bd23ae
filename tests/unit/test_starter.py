"""`bootmatrix init`: a starter a team commits to its own repository, whose every file works as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from matrix.cli import lock_hash, main
from matrix.starter import FILES

REPO = Path(__file__).parents[2]


def test_init_writes_the_starter_and_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = tmp_path / "project"
    assert main(["init", str(project)]) == 0
    for relative in [*FILES, ".bootmatrix-lock-hash"]:
        assert (project / relative).is_file(), relative
    assert (project / ".bootmatrix-lock-hash").read_text().strip() == lock_hash()
    (project / "boot.toml").write_text("# mine\n")
    capsys.readouterr()
    assert main(["init", str(project)]) == 0
    assert (project / "boot.toml").read_text() == "# mine\n"
    assert "kept " + str(project / "boot.toml") in capsys.readouterr().out


def test_the_starter_collects_one_test_per_cell_through_its_ini_option(tmp_path: Path) -> None:
    """pytest in the new repository finds the plugin, reads boot.toml through `bootmatrix_matrix`, and
    parametrizes the starter test by its three cells (collected only: booting is the VM test's job)."""
    assert main(["init", str(tmp_path)]) == 0
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for cell in ("x86_64-seabios-direct", "aarch64-virt-direct", "riscv64-opensbi-direct"):
        assert f"tests/test_boot.py::test_boots_to_a_shell_of_its_arch[{cell}]" in listed.stdout


def test_the_ci_examples_key_the_cache_on_the_lock_and_shard(tmp_path: Path) -> None:
    github, gitlab = FILES[".github/workflows/boot.yml"], FILES[".gitlab-ci.yml"]
    assert "bootmatrix lock --hash" in github and "actions/cache" in github and "--splits 2 --group" in github
    assert "files: [.bootmatrix-lock-hash]" in gitlab and '--splits "$CI_NODE_TOTAL"' in gitlab
    for text in (github, gitlab):
        assert "BOOTMATRIX_CACHE" in text and "doctor --fix" in text


def test_lock_hash_is_the_shipped_locks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lock", "--hash"]) == 0
    assert capsys.readouterr().out.strip() == lock_hash() and len(lock_hash()) == 64
