"""Timeouts that follow the accelerator and the guest arch, so a hang is caught fast under KVM and a slow
but healthy TCG boot is not failed. Budgets are for hangs, never for performance gates.
"""

from __future__ import annotations

from arches import ARCHES

# Multipliers on a TCG x86_64 budget (arches.Arch.timeout_factor: under TCG, aarch64 with cortex-a57 and
# riscv64 boot a little faster than x86_64 q35); under KVM a boot takes a fraction of the TCG time.
ACCEL_FACTOR = {"tcg": 1.0, "kvm": 0.25}


def scaled(seconds: float, arch: str, accel: str, minimum: float = 5.0) -> float:
    factor = ARCHES[arch].timeout_factor if arch in ARCHES else 1.5
    return max(minimum, seconds * factor * ACCEL_FACTOR.get(accel, 1.0))
