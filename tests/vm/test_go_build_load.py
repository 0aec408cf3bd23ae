"""x86_64 under Go build load: the cold build of a command (the go command compiles the runtime and
every std package it needs, one to two minutes of both vCPUs under TCG). Under the host's QEMU 7.2 such
guests crash: measured here 1 of 3 runs survived with -smp 2 and 0 of 6 with -smp 1, each dying in
the kernel's SLUB fast path at `cmpxchg16b %gs:(%rdi)` (__kmalloc_noprof+0x130) with garbage in EFLAGS,
or reading a source file back with NUL bytes in it; with the CPU's cx16 flag off (`-cpu qemu64,-cx16`,
so the kernel never uses cmpxchg16b) 3 of 3 survived. QEMU 7.2's TCG emulation of cmpxchg16b is the
suspect; the pinned QEMU 10.0 must keep the guest alive with cx16 on. A crash fails at once with QEMU's
words or the kernel's (bench/go_build_load.py counts crashes of any QEMU over several runs)."""

from __future__ import annotations

import time

import pytest

from harness.deadline import Deadline
from matrix.profiles import direct_cell

pytestmark = pytest.mark.vm
COLD_BUILD = ("cd /src/cmds/wc && GOROOT=/go GOCACHE=/tmp/cold-cache GOFLAGS=-trimpath CGO_ENABLED=0 "
              "GOTOOLCHAIN=local HOME=/tmp /run/bm/bin/go build -o /tmp/wc-cold . && /tmp/wc-cold /src/go.mod")


def test_x86_64_survives_a_cold_go_build(bootmatrix_vms, record_property) -> None:
    # One vCPU: QEMU 7.2 failed with one as with two, and one avoids an unrelated, rare abort of QEMU 10
    # while a two-vCPU x86_64 guest enumerates PCI (see tests/vm/test_gosource.py).
    guest = bootmatrix_vms(direct_cell("x86_64", image="gosource", memory_mib=2048, smp=1))
    # The load must exercise the instruction QEMU 7.2 got wrong: the guest CPU offers cmpxchg16b.
    assert guest.console.run("grep -c ' cx16 ' /proc/cpuinfo", Deadline.after(300)) == ("1", 0)
    started = time.monotonic()
    output, code = guest.console.run(COLD_BUILD, Deadline.after(1200))
    seconds = time.monotonic() - started
    record_property("cold_build_seconds", round(seconds, 1))
    guest.metric("go_cold_build_s", seconds, "s")
    assert code == 0 and output.endswith("/src/go.mod"), output
