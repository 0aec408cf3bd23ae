from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import harness.qemu as qemu_module
from harness import accel
from harness.accel import ACCEL_ENV, AccelVerdict, choose_accel, clear_verdicts, kvm_verdict, probe_boot_sector
from harness.deadline import Deadline
from harness.qemu import QemuInstall
from harness.timeouts import scaled
from tests.timing import AT_ONCE


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
    deadline = Deadline.after(100)
    assert 100 * (1 - AT_ONCE) < deadline.remaining() <= 100 and not deadline.expired()
    assert deadline.sooner(1).remaining() <= 1
    assert deadline.sooner(100) is deadline
    short = Deadline.after(0.01)
    time.sleep(0.02)
    assert short.expired() and short.remaining() == 0


class CountingProbe:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, qemu: QemuInstall, workdir: Path, kernel: object = None) -> AccelVerdict:
        self.calls += 1
        return AccelVerdict(False, f"probe {self.calls}", 0.1, "fp")


@pytest.fixture
def fake_kvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[QemuInstall, Path, CountingProbe]:
    """A QEMU that only answers --version, a stand-in /dev/kvm, and a probe that counts its runs."""
    binary = tmp_path / "bin/qemu-system-x86_64"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\necho 'QEMU emulator version 9.9.9'\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{binary.parent}:{os.environ['PATH']}")
    qemu_module._version.cache_clear()
    device = tmp_path / "kvm"
    device.write_text("")
    monkeypatch.setattr(accel, "KVM_DEVICE", device)
    probe = CountingProbe()
    monkeypatch.setattr(accel, "run_kvm_probe", probe)
    return QemuInstall.host(), device, probe


def test_the_kvm_verdict_is_cached_then_probed_again_when_stale(
    fake_kvm: tuple[QemuInstall, Path, CountingProbe], tmp_path: Path
) -> None:
    qemu, device, probe = fake_kvm
    cache = tmp_path / "accel"
    assert kvm_verdict(qemu, cache).reason == "probe 1"
    assert kvm_verdict(qemu, cache).reason == "probe 1" and probe.calls == 1  # cached

    (cached,) = cache.glob("kvm-*.json")
    data = json.loads(cached.read_text())
    cached.write_text(json.dumps({**data, "probed_at": time.time() - accel.VERDICT_TTL - 1}))
    assert kvm_verdict(qemu, cache).reason == "probe 2"  # expired

    device.chmod(0o600)
    assert kvm_verdict(qemu, cache).reason == "probe 3"  # /dev/kvm changed (its mode)
    device.unlink()
    assert kvm_verdict(qemu, cache).reason == "probe 4"  # /dev/kvm gone
    assert kvm_verdict(qemu, cache).reason == "probe 4"

    binary = qemu.binary("x86_64")
    binary.write_text(binary.read_text() + "# rebuilt\n")  # same version, another binary
    assert kvm_verdict(qemu, cache).reason == "probe 5"

    assert clear_verdicts(cache) == [cached] and not list(cache.glob("kvm-*.json"))
    assert kvm_verdict(qemu, cache).reason == "probe 6"
