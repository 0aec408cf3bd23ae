"""Timeouts that follow the accelerator and the guest arch, so a hang is caught fast under KVM and a slow
but healthy TCG boot is not failed. Budgets are for hangs, never for performance gates.
"""

from __future__ import annotations

# Multipliers on a TCG x86_64 budget, measured here: under TCG, aarch64 (cortex-a57) and riscv64 boot a
# little faster than x86_64 q35; under KVM a boot takes a fraction of the TCG time.
ARCH_FACTOR = {"x86_64": 1.0, "aarch64": 1.0, "riscv64": 1.0}
ACCEL_FACTOR = {"tcg": 1.0, "kvm": 0.25}


def scaled(seconds: float, arch: str, accel: str, minimum: float = 5.0) -> float:
    return max(minimum, seconds * ARCH_FACTOR.get(arch, 1.5) * ACCEL_FACTOR.get(accel, 1.0))
