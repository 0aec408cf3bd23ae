"""bootmatrix as another team gets it: the wheel built from this tree, installed into a fresh virtual
environment (no checkout on its path), then `bootmatrix init` and the starter's own test, booted for
real on one cell. The artifact cache is the session's, so images built once are not built again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm
REPO = Path(__file__).parents[2]
CELL = "riscv64-opensbi-direct"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bin` folder of a fresh venv with the wheel of this tree installed."""
    work = tmp_path_factory.mktemp("installed")
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(work / "dist"),
                    str(REPO)], capture_output=True, text=True, check=True)
    (wheel,) = (work / "dist").glob("*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    pip = subprocess.run([str(work / "venv/bin/pip"), "install", "-q", str(wheel)], capture_output=True, text=True,
                         check=False)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return work / "venv/bin"


def run(command: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_the_installed_package_carries_every_guest_source(installed: Path, tmp_path: Path) -> None:
    """The mostly-source image and the tinyboot ISO are built from guest sources shipped in the package:
    the installed copy's sources must be this tree's, byte for byte (their digest is a store input)."""
    probe = ("from images.recipes.gosource import sources_digest, GUEST_GO; import images, sys; "
             "print(images.__file__); print(sources_digest()); "
             "print(sources_digest(GUEST_GO.parent / 'tinyboot')); "
             "print(len(list(GUEST_GO.rglob('*.go'))), len(list((GUEST_GO.parent / 'tinyboot').rglob('*.go'))))")
    done = run([str(installed / "python"), "-c", probe], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, gosource, tinyboot, go_files, tinyboot_files = done.stdout.split()
    assert int(go_files) > 20 and int(tinyboot_files) > 2
    assert str(installed.parent) in where, "imported from the venv, not from the checkout"
    from images.recipes.gosource import GUEST_GO, sources_digest

    assert (gosource, tinyboot) == (sources_digest(), sources_digest(GUEST_GO.parent / "tinyboot"))
    listed = run([str(installed / "bootmatrix"), "list", "gosource"], cwd=tmp_path)
    assert listed.returncode == 0 and "riscv64-opensbi-direct-gosource" in listed.stdout


def test_init_then_the_starter_tests_pass_from_the_installed_package(installed: Path, tmp_path: Path) -> None:
    """`bootmatrix init`, then `pytest -n 2` on the starter: its test on each of its three cells, one per
    arch, with results where its pytest.ini says."""
    project = tmp_path / "their-repo"
    assert run([str(installed / "bootmatrix"), "init", str(project)], cwd=tmp_path).returncode == 0
    done = run([str(installed / "pytest"), "-p", "no:cacheprovider", "-n", "2", "--bootmatrix-no-history"],
               cwd=project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout
    for cell in ("x86_64-seabios-direct", "aarch64-virt-direct", "riscv64-opensbi-direct"):
        assert list((project / "results").glob(f"*/*{cell}*/vm/console.log")), cell


@pytest.mark.parametrize(("matrix", "cell_id"), [("gosource", "riscv64-opensbi-direct-gosource"),
                                          ("tinyboot", "x86_64-seabios-iso-tinyboot")])
def test_a_shipped_cell_runs_by_name_from_the_installed_package(installed: Path, tmp_path: Path, matrix: str,
                                                               cell_id: str) -> None:
    """The two image kinds the wheel could not build before (their guest sources were left out): a cell
    of each, by the shipped matrix's name. Gates are off: this checks that it boots, the compile gate
    is the gosource tests' (and it is noisy under a loaded suite: docs/gosource.md)."""
    done = run([str(installed / "bootmatrix"), "run", matrix, "--cell", cell_id, "--no-history", "--no-gates",
                "--results", str(tmp_path / "results")], cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    (summary,) = (tmp_path / "results").glob("run-*/summary.json")
    assert [(c["cell"], c["result"]) for c in json.loads(summary.read_text())["cells"]] == [(cell_id, "pass")]


def test_doctor_from_the_installed_package_tells_the_truth(installed: Path, tmp_path: Path) -> None:
    """On this host, then on one whose PATH lacks mtools' programs (a folder of links to everything else)."""
    done = run([str(installed / "bootmatrix"), "doctor"], cwd=tmp_path)
    assert done.returncode == 0 and "the default matrix can run here" in done.stdout, done.stdout
    bare = tmp_path / "bin"
    bare.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in Path(folder).iterdir() if Path(folder).is_dir() else ():
            if tool.name not in ("mmd", "mcopy") and not (bare / tool.name).exists():
                (bare / tool.name).symlink_to(tool)
    env = {**os.environ, "PATH": str(bare)}
    lacking = subprocess.run([str(installed / "bootmatrix"), "doctor"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300, check=False)
    assert lacking.returncode == 1, lacking.stdout
    assert "missing mmd, mcopy" in lacking.stdout and "the default matrix cannot run here" in lacking.stdout
    assert "installed: is its folder on PATH?" in lacking.stdout  # mtools is there: PATH is what lacks it
