"""`bootmatrix doctor` and the one list of host packages (which scripts/setup-host installs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrix import doctor, host_packages
from matrix.cli import main

STICK = [p for p in host_packages.PACKAGES if p.capability == "the stick"]


@pytest.mark.vm  # the KVM probe starts QEMU
def test_this_host_can_run_the_default_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BOOTMATRIX_CACHE", str(tmp_path / "cache"))
    assert main(["doctor"]) == 0
    shown = capsys.readouterr().out
    for capability in ("Debian fetching", "pinned QEMU", "host QEMU", "KVM", "the stick", "the tinyboot ISO",
                       "snapshots"):
        assert capability in shown
    assert f"cache: {tmp_path / 'cache'}: 0.00 GB in 0 entries" in shown
    assert "the default matrix can run here" in shown


def test_a_missing_tool_names_its_capability_and_the_one_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BOOTMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(host_packages, "missing", lambda packages=host_packages.PACKAGES: STICK)
    monkeypatch.setattr(doctor, "_kvm", lambda *args: doctor.Capability("KVM", None, "not probed in this test"))
    real = doctor._tools
    monkeypatch.setattr(doctor, "_tools", lambda names: ["mkfs.vfat", "mcopy"] if "mcopy" in names else real(names))
    assert main(["doctor"]) == 1
    shown = capsys.readouterr().out
    assert "missing mkfs.vfat, mcopy" in shown
    assert "apt-get install -y --no-install-recommends dosfstools mtools" in shown
    assert "the default matrix cannot run here" in shown


def test_fix_without_root_or_sudo_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import shutil

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which",
                        lambda name, *args, **kwargs: None if name == "sudo" else real_which(name))
    assert host_packages.install(STICK) == 1
    assert "need root or sudo to run: apt-get install -y --no-install-recommends dosfstools mtools" in (
        capsys.readouterr().err)


def test_setup_host_is_a_caller_of_the_one_list() -> None:
    script = (Path(__file__).parents[2] / "scripts" / "setup-host").read_text()
    assert "matrix/host_packages.py --install" in script
    assert "apt-get" not in script.replace("apt-get install python3", "")
