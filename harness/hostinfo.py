"""Facts about the host that decide whether two measurements or probe verdicts are comparable."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "CPU part")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _meminfo_kib(field: str) -> int | None:
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return int(fields[field].split()[0])
    except (OSError, KeyError, ValueError):
        return None


def memory_gib() -> int | None:
    total = _meminfo_kib("MemTotal")
    return None if total is None else total // (1 << 20)


# What one VM takes, for deciding how many to run at once: a guest (512 MiB), QEMU and TCG's translation
# cache, with room.
VM_MEMORY_BUDGET = 1.5 * 1024**3


def memory_available_bytes() -> int | None:
    available = _meminfo_kib("MemAvailable")
    return None if available is None else available * 1024


def host_facts() -> list[str]:
    """Arch, CPU model, cores, memory (GiB), kernel: the same on every machine of one kind. Not the name."""
    return [platform.machine(), cpu_model(), str(os.cpu_count()), str(memory_gib()), platform.release()]
