from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.accel import ACCEL_ENV, choose_accel, probe_boot_sector
from harness.deadline import Deadline
from harness.qemu import QemuInstall
from harness.timeouts import scaled


def test_probe_boot_sector_is_a_valid_mbr() -> None:
    sector = probe_boot_sector()
    assert len(sector) == 512 and sector[-2:] == b"\x55\xaa"
    assert sector[:4] == bytes([0xB0, 0x2A, 0xE6, 0xF4])  # mov al,0x2a; out 0xf4,al


def test_cross_arch_guests_use_tcg_without_probing(tmp_path: Path) -> None:
    accel, why = choose_accel("riscv64", QemuInstall.host(), tmp_path)
    assert accel == "tcg" and "riscv64 guest" in why
    assert not list(tmp_path.iterdir())  # no probe ran


def test_environment_forces_the_accelerator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ACCEL_ENV, "tcg")
    assert choose_accel("x86_64", QemuInstall.host(), tmp_path) == ("tcg", f"forced by {ACCEL_ENV}")


def test_timeouts_shrink_under_kvm() -> None:
    assert scaled(90, "x86_64", "kvm") < scaled(90, "x86_64", "tcg")
    assert scaled(1, "x86_64", "kvm") == 5.0  # never below the floor


def test_deadline_counts_down_and_sooner_picks_the_earlier() -> None:
    deadline = Deadline.after(10)
    assert 9 < deadline.remaining() <= 10 and not deadline.expired()
    assert deadline.sooner(1).remaining() <= 1
    assert deadline.sooner(100) is deadline
    short = Deadline.after(0.01)
    time.sleep(0.02)
    assert short.expired() and short.remaining() == 0
