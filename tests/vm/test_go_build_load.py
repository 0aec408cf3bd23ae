"""x86_64 under Go build load: the cold build of a command (the go command compiles the runtime and
every std package it needs, about two minutes of both vCPUs under TCG). Under the host's QEMU 7.2 such
guests crashed in 4 of 5 runs; the pinned QEMU must keep them alive. A crash fails at once with QEMU's
words or the kernel's (see bench/go_build_load.py to count crashes of any QEMU over several runs)."""

from __future__ import annotations

import time

import pytest

from harness.deadline import Deadline
from matrix.profiles import direct_cell

pytestmark = pytest.mark.vm
COLD_BUILD = ("cd /src/cmds/wc && GOROOT=/go GOCACHE=/tmp/cold-cache GOFLAGS=-trimpath CGO_ENABLED=0 "
              "GOTOOLCHAIN=local HOME=/tmp /run/bm/bin/go build -o /tmp/wc-cold . && /tmp/wc-cold /src/go.mod")


def test_x86_64_survives_a_cold_go_build(bootmatrix_vms, record_property) -> None:  # type: ignore[no-untyped-def]
    guest = bootmatrix_vms(direct_cell("x86_64", image="gosource", memory_mib=2048, smp=2))
    started = time.monotonic()
    output, code = guest.console.run(COLD_BUILD, Deadline.after(1200))
    seconds = time.monotonic() - started
    record_property("cold_build_seconds", round(seconds, 1))
    guest.metric("go_cold_build_s", seconds, "s")
    assert code == 0 and output.endswith("/src/go.mod"), output
