"""Compile latency of the mostly-source image: how long a command's first call (compile + run) and second
call (run) take in a guest, and the gate that judges them against a matrix file's budget and the history.

The gate: a cell fails when the median first-call latency exceeds the budget's median, the slowest first
call exceeds the budget's max, or the median exceeds the stored baseline (median of earlier runs on this
host, same accelerator) by more than `baseline_tolerance`. Budgets depend on the accelerator: a TCG guest
emulates every instruction, so it gets its own.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from harness.console import Console
from harness.deadline import Deadline


class LatencyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    median: float = Field(gt=0)  # seconds
    max: float = Field(gt=0)


class CompileBudget(BaseModel):
    """`[compile_budget]`: first-call latency budgets of on-demand compiled commands, per accelerator,
    and how far above the stored baseline (relative) a cell's median may go. See matrix/latency.py."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kvm: LatencyLimits
    tcg: LatencyLimits
    baseline_tolerance: float = Field(0.2, ge=0)
    min_runs: int = Field(3, ge=1)

    def for_accel(self, accel: str) -> LatencyLimits:
        return self.kvm if accel == "kvm" else self.tcg



FIRST_CALL_MEDIAN = "compile_first_median_s"  # wall clock, recorded in the history
# QEMU's CPU seconds: what the gate judges, and the history metric the baseline comparison uses
FIRST_CALL_CPU_MEDIAN = "compile_first_cpu_median_s"
BUILT = re.compile(r"bmbuild: built \S+ in [0-9.]+ s \((.*)\)")  # images/guest/go/bmbuild: its verbose report
STAGES = ("check", "compile", "link")  # what the builder times of a build through a plan, in order
STAGE = re.compile(rf"\b({'|'.join(STAGES)}) ([0-9.]+) s\b")  # a stage's seconds in that report
# The sweep `bootmatrix run` and bench/compile_latency.py time: each command with arguments that succeed
# twice in a row on the image. Left out: ln and mv (a second call finds its target), umount and poweroff
# (they take the guest's file systems or the guest away), wget (it needs a server).
SWEEP = {
    "cat": "/src/go.mod", "chmod": "755 /tmp", "cp": "/src/go.mod /tmp/bm-copy", "date": "", "df": "",
    "dmesg": "", "env": "", "free": "", "gofmt": "/src/cmds/ls/main.go", "grep": "module /src/go.mod",
    "head": "/src/go.mod", "hostname": "", "ip": "addr", "kill": "-0 1", "ls": "/src", "mkdir": "-p /tmp/bm-dir",
    "mount": "", "ps": "", "rm": "-f /tmp/bm-none", "sha256sum": "/src/go.mod", "sleep": "0",
    "touch": "/tmp/bm-touched", "uname": "", "wc": "/src/go.mod",
}


@dataclass
class CallTimes:
    first: float  # seconds: the stub's first call, which builds the command, then runs it
    second: float  # seconds: the call after, which runs the built binary
    built: bool  # the builder reported a build on the first call and none on the second
    how: str = ""  # the builder's words on how: "plan: check 0.02 s, compile 0.20 s, link 0.58 s" or "go build: ..."
    first_cpu: float | None = None  # CPU seconds QEMU spent during the first call (None: not measured)

    @property
    def planned(self) -> bool:
        return self.how.startswith("plan:")

    @property
    def stages(self) -> dict[str, float]:
        """Seconds of each stage the builder timed (check, compile, link), from its report."""
        return {name: float(seconds) for name, seconds in STAGE.findall(self.how)}


@dataclass
class LatencyVerdict:
    median: float  # of what was judged: QEMU CPU seconds when measured, else wall-clock seconds
    slowest: float
    slowest_command: str
    failures: list[str] = field(default_factory=list)
    basis: str = "wall-clock seconds"  # what the budget was compared with, said in every failure

    @property
    def passed(self) -> bool:
        return not self.failures


def read_guest_file(console: Console, path: str, deadline: Deadline) -> tuple[str, int]:
    """A guest file's text through the shell's own `read`: on this image `cat` is a command built on
    first use, and reading a log must not build one."""
    return console.run(f'while read -r line; do echo "$line"; done < {path}', deadline)


def wait_for_log(console: Console, path: str, marker: str, limit_s: float) -> tuple[float, str] | None:
    """(seconds waited, the log) once the guest's log at `path` holds `marker`; None when there is no
    such log (the guest runs no such job)."""
    started = time.monotonic()
    while True:
        log, code = read_guest_file(console, path, Deadline.after(60))
        if code != 0:
            return None
        if marker in log:
            return time.monotonic() - started, log
        if time.monotonic() - started > limit_s:
            raise RuntimeError(f"{path} did not say {marker!r} within {limit_s:.0f} s: {log!r}")
        time.sleep(0.5)


def wait_for_warmup(console: Console, limit_s: float = 300.0) -> float | None:
    """Seconds until the image's background warm-up build is done (init starts it before the marker,
    unless bm.warmup=0), or None when the guest runs none. A sweep starts after it: the warm-up takes
    the first build's one-time cost (the emulator translating the toolchain's code, the disk) off the
    first command measured."""
    found = wait_for_log(console, "/run/bm/warmup.log", "bmbuild:", limit_s)
    return None if found is None else found[0]


CpuClock = Callable[[], float | None]  # QEMU's CPU seconds so far (Machine.cpu_seconds)


def _timed_call(console: Console, call: str, deadline_s: float,
                cpu_clock: CpuClock | None = None) -> tuple[str, int, float, float | None]:
    """(output, exit status, wall seconds, QEMU CPU seconds or None) of one shell call."""
    cpu_before = cpu_clock() if cpu_clock is not None else None
    started = time.monotonic()
    output, code = console.run(call, Deadline.after(deadline_s))
    took = time.monotonic() - started
    cpu_after = cpu_clock() if cpu_clock is not None else None
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return output, code, took, cpu


def measure_calls(console: Console, commands: dict[str, str], deadline_s: float = 600.0,
                  cpu_clock: CpuClock | None = None) -> dict[str, CallTimes]:
    """Call each command twice by its stub (/ubin/<name> <arguments>), timing each call from the host
    (and, with `cpu_clock`, the CPU time QEMU spent on the first). The builder reports its builds on
    stderr (BMBUILD_VERBOSE), so a rebuild on the second call shows."""
    times: dict[str, CallTimes] = {}
    for name, arguments in commands.items():
        call = f"BMBUILD_VERBOSE=1 /ubin/{name} {arguments} 2>&1 >/dev/null"
        outputs, seconds, cpus = [], [], []
        for which in ("first", "second"):
            output, code, took, cpu = _timed_call(console, call, deadline_s, cpu_clock)
            if code != 0:
                raise RuntimeError(f"{name} {arguments} failed on its {which} call ({code}): {output}")
            outputs.append(output)
            seconds.append(took)
            cpus.append(cpu)
        built = f"bmbuild: built {name} in" in outputs[0] and "bmbuild: built" not in outputs[1]
        report = BUILT.search(outputs[0])
        times[name] = CallTimes(round(seconds[0], 3), round(seconds[1], 3), built, report.group(1) if report else "",
                                None if cpus[0] is None else round(cpus[0], 3))
    return times


def own_run_times(console: Console, commands: dict[str, str], deadline_s: float = 60.0) -> dict[str, float]:
    """Seconds of each built command run as itself (/run/bm/cache/bin/<name>), without its stub and the
    builder: what a second call costs over it is the builder's own overhead."""
    seconds = {}
    for name, arguments in commands.items():
        output, code, took, _ = _timed_call(console, f"/run/bm/cache/bin/{name} {arguments} 2>&1 >/dev/null",
                                            deadline_s)
        if code != 0:
            raise RuntimeError(f"the built {name} {arguments} failed ({code}): {output}")
        seconds[name] = round(took, 3)
    return seconds


def run_sweep(console: Console, cpu_clock: CpuClock | None = None) -> tuple[float | None, dict[str, CallTimes]]:
    """The sweep of `bootmatrix run` and the benchmark: wait for the warm-up (its seconds, or None), then
    call every command of SWEEP twice."""
    warmup = wait_for_warmup(console)
    return warmup, measure_calls(console, SWEEP, cpu_clock=cpu_clock)


def judge_latency(
    first_calls: dict[str, float], budget: CompileBudget, accel: str, baseline: float | None = None,
    first_cpu: dict[str, float] | None = None,
) -> LatencyVerdict:
    """The gate's verdict on one cell's first-call latencies (seconds by command).

    With `first_cpu` (QEMU's CPU seconds per first call, measured in the same run) those are judged:
    they measure the guest's work, which another process busy on the host does not stretch, where the
    wall clock does (a busy host once took gofmt from 3.6-4.1 s to 4.23 s wall and failed a 4.0 s
    budget). Every failure names what was compared, and gives the wall-clock figure beside it."""
    if not first_calls:
        raise ValueError("no first-call latencies to judge")
    limits = budget.for_accel(accel)
    cpu = first_cpu if first_cpu is not None and set(first_cpu) == set(first_calls) else None
    judged = cpu if cpu is not None else first_calls
    basis = "QEMU CPU seconds" if cpu is not None else "wall-clock seconds"
    median = statistics.median(judged.values())
    slowest_command = max(judged, key=lambda name: judged[name])
    verdict = LatencyVerdict(median, judged[slowest_command], slowest_command, basis=basis)
    wall_median, wall_slowest = statistics.median(first_calls.values()), first_calls[slowest_command]

    def also(wall: float) -> str:
        return f" ({wall:.2f} s wall clock)" if cpu is not None else ""

    if median > limits.median:
        verdict.failures.append(f"median first call {median:.2f} {basis}{also(wall_median)} exceeds the {accel} "
                                f"budget {limits.median:.2f} s")
    if verdict.slowest > limits.max:
        verdict.failures.append(f"slowest first call ({slowest_command}) {verdict.slowest:.2f} {basis}"
                                f"{also(wall_slowest)} exceeds the {accel} budget {limits.max:.2f} s")
    if baseline is not None and median > baseline * (1 + budget.baseline_tolerance):
        verdict.failures.append(f"median first call {median:.2f} {basis} exceeds the baseline {baseline:.2f} s "
                                f"(earlier runs, same measure) by more than {budget.baseline_tolerance * 100:.0f} %")
    return verdict
