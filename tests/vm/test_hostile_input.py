"""Hostile input against the real QEMU: what a path or a file given by a user makes QEMU open."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.machine import Machine
from harness.spec import Disk, MachineSpec
from matrix.lab import Lab

pytestmark = pytest.mark.vm


def test_a_comma_in_a_disk_path_opens_that_file_and_nothing_else(tmp_path: Path, bootmatrix_lab: Lab) -> None:
    """`x.img,file=secret.img` is a legitimate file name: QEMU (paused, nothing booted) must attach that
    file, and secret.img must not be attached (before quoting it was: QMP query-block named it)."""
    folder = tmp_path / "Smith, John"
    folder.mkdir()
    odd = folder / "x.img,file=secret.img"
    odd.write_bytes(b"\0" * 65536)
    (folder / "secret.img").write_bytes(b"secret".ljust(65536, b"\0"))
    spec = MachineSpec("x86_64", "q35", disks=(Disk(odd, snapshot=False, readonly=True),), extra_args=("-S",))
    with Machine(spec, bootmatrix_lab.qemu("pinned"), tmp_path / "vm").start() as machine:
        blocks = machine.qmp.execute("query-block")
        machine.stop(check=False)
    files = [b["inserted"]["file"] for b in blocks if "inserted" in b]
    assert files == [str(odd)]
