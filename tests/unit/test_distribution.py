"""The package a team installs: the sdist and the wheel, built here, carry every file of the tree that
the recipes, locks, guest sources and shipped matrices need, and pass `twine check`. The expected files
come from the tree (git's list), not from a list kept beside it: a file added under images/guest/ fails
this test until the packaging takes it, which its recursive globs do."""

from __future__ import annotations

import email
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
PACKAGES = ("arches", "harness", "images", "matrix")


def tree_files() -> set[str]:
    """The files the installed package must have: every tracked file of the Python packages (code,
    guest sources, lock files, matrix files), by path."""
    listed = subprocess.run(["git", "ls-files", *PACKAGES], cwd=REPO, capture_output=True, text=True, check=True)
    return {path for path in listed.stdout.splitlines() if (REPO / path).is_file()}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
                   capture_output=True, text=True, check=True)
    return out


def test_the_wheel_has_every_file_of_the_tree_and_nothing_stray(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    ours = {name for name in names if not name.startswith("bootmatrix-")}
    expected = tree_files()
    assert expected - ours == set(), "missing from the wheel"
    assert ours - expected == set(), "in the wheel but not in the tree (a build leftover?)"
    assert any(name.startswith("images/guest/go/cmds/") and name.endswith(".go") for name in ours)
    assert any(name.startswith("images/guest/tinyboot/") for name in ours)


def test_the_sdist_has_the_tree_the_license_and_the_readme(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert tree_files() - names == set()
    assert {"LICENSE", "README.md", "pyproject.toml"} <= names


def test_twine_accepts_both_and_the_index_page_says_what_it_is(dist: Path) -> None:
    files = sorted(str(path) for path in dist.iterdir())
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *files],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_string(archive.read("bootmatrix-0.1.0.dist-info/METADATA").decode())
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.11"
    assert "Framework :: Pytest" in metadata.get_all("Classifier", [])
    assert metadata["Summary"] and metadata["Description-Content-Type"] == "text/markdown"
