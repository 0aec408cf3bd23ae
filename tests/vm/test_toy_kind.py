"""A new image kind from one file: this one. It registers a toy kind (a busybox initramfs whose init prints
a banner naming the arch and powers off), then boots it through `bootmatrix_vms` and through
`bootmatrix run` (a matrix file that imports this file), with no edit anywhere else."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from images.recipes.firmware import FirmwareSet
from images.recipes.minimal import MinimalImage, build_minimal
from matrix.kinds import ImageKind, Readiness, register
from matrix.model import Cell
from matrix.profiles import BootMedia
from matrix.provision import Provisioner

pytestmark = pytest.mark.vm

TOY_INIT = """#!/bin/sh
/bin/busybox mount -t proc proc /proc
echo "TOY-BANNER arch=$(/bin/busybox uname -m) cmdline=$(/bin/busybox cat /proc/cmdline)"
/bin/busybox poweroff -f
"""


class Toy(ImageKind):
    """Direct boots only; ready is the banner; no shell, no snapshots."""

    name = "toy"

    def check(self, cell: Cell) -> None:
        if cell.media != "direct":
            raise ValueError("the toy image boots directly: media = \"direct\"")
        super().check(cell)

    def image(self, lab: Provisioner, arch: str) -> MinimalImage:
        init = Path(tempfile.gettempdir()) / "bm-toy-init.sh"
        if not init.exists() or init.read_text() != TOY_INIT:
            init.write_text(TOY_INIT)
        return build_minimal(lab.store, lab.fetcher(), arch, init=init, name="toy")

    def media(self, lab: Provisioner, cell: Cell, firmware: FirmwareSet | None) -> BootMedia:
        return BootMedia(self.image(lab, cell.arch), firmware)

    def readiness(self, lab: Provisioner, cell: Cell) -> Readiness:
        # The whole line: a pattern that can match a prefix of it (`arch=\S+`) is met by whatever part
        # of the line the first chunk brought (seen once: "TOY-BANNER arch=x86", under load).
        return Readiness(r"TOY-BANNER arch=\S+ cmdline=[^\r\n]*[\r\n]", shell=False)


register(Toy())

TOY_CELLS = [Cell(arch="riscv64", firmware="opensbi", image="toy"),
             Cell(arch="x86_64", firmware="seabios", image="toy")]


@pytest.mark.parametrize("toy", TOY_CELLS, ids=[c.id for c in TOY_CELLS])
def test_a_kind_of_ones_own_boots_through_the_vm_factory(bootmatrix_vms, toy: Cell) -> None:
    guest = bootmatrix_vms(toy)
    banner = guest.timeline.marks["init"].text
    assert banner.startswith(f"TOY-BANNER arch={toy.arch} cmdline=console="), banner
    assert "panic=-1" in banner  # the default shape of a direct boot: the kernel options every boot needs
    assert guest.machine.process is not None and guest.machine.process.wait(60) == 0  # it powered off


def test_a_kind_of_ones_own_boots_through_bootmatrix_run(tmp_path: Path) -> None:
    matrix = tmp_path / "toy.toml"
    matrix.write_text(f'imports = ["{Path(__file__)}"]\n\n'
                      '[[cell]]\narch = "riscv64"\nfirmware = "opensbi"\nimage = "toy"\n')
    done = subprocess.run([sys.executable, "-m", "matrix.cli", "run", str(matrix), "--no-history", "--results",
                           str(tmp_path / "results")], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (summary,) = (tmp_path / "results").glob("run-*/summary.json")
    (row,) = json.loads(summary.read_text())["cells"]
    assert (row["cell"], row["result"]) == ("riscv64-opensbi-direct-toy", "pass")
    assert row["milestones"]["init"] <= row["milestones"]["ready"]


def test_a_matrix_file_naming_a_missing_kind_module_says_which(tmp_path: Path) -> None:
    matrix = tmp_path / "m.toml"
    matrix.write_text('imports = ["nowhere.py"]\n\n[[cell]]\narch = "riscv64"\nfirmware = "opensbi"\n')
    done = subprocess.run([sys.executable, "-m", "matrix.cli", "list", str(matrix)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert f"{matrix}: imports[0]: {tmp_path / 'nowhere.py'} does not exist" in done.stdout + done.stderr
