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
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from pydantic import BaseModel, ConfigDict, Field

from harness.console import Console
from harness.deadline import Deadline
from images.recipes.gosource import BUILD_ENV, STUB_INTERPRETER


class LatencyLimits(BaseModel):
    """Budgets in seconds, set on a host where the guest's speed reference (REFERENCE_BUILD) took
    `reference` seconds. A run whose reference takes longer (another process busy on the host, a
    slower host) gets its budgets stretched by the same factor: the gate judges the guest's compile
    speed, not the host's load."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    median: float = Field(gt=0)  # seconds
    max: float = Field(gt=0)
    # Seconds of the speed reference, by guest arch, on the quiet host where these were set (each arch
    # emulates the build at its own speed); an arch not named is judged on the budget as written.
    reference: dict[str, float] = Field(default_factory=dict)


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



FIRST_CALL_MEDIAN = "compile_first_median_s"  # the history metric the baseline comparison uses
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
    retimed: float | None = None  # seconds of a second first call (binary removed), for the sweep's slowest

    @property
    def judged(self) -> float:
        """The first call the gate judges: the lower of the two timings where it was timed again."""
        return self.first if self.retimed is None else min(self.first, self.retimed)

    @property
    def planned(self) -> bool:
        return self.how.startswith("plan:")

    @property
    def stages(self) -> dict[str, float]:
        """Seconds of each stage the builder timed (check, compile, link), from its report."""
        return {name: float(seconds) for name, seconds in STAGE.findall(self.how)}


@dataclass
class LatencyVerdict:
    median: float
    slowest: float
    slowest_command: str
    failures: list[str] = field(default_factory=list)
    factor: float = 1.0  # how far the budgets were stretched for this run's speed reference
    compared: str = "the budget as written"  # what the budgets were, in words: every failure says it

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


def _timed_call(console: Console, call: str, deadline_s: float) -> tuple[str, int, float]:
    started = time.monotonic()
    output, code = console.run(call, Deadline.after(deadline_s))
    return output, code, time.monotonic() - started


def measure_calls(console: Console, commands: dict[str, str], deadline_s: float = 600.0) -> dict[str, CallTimes]:
    """Call each command twice by its stub (/ubin/<name> <arguments>), timing each call from the host.
    The builder reports its builds on stderr (BMBUILD_VERBOSE), so a rebuild on the second call shows."""
    times: dict[str, CallTimes] = {}
    for name, arguments in commands.items():
        call = f"BMBUILD_VERBOSE=1 /ubin/{name} {arguments} 2>&1 >/dev/null"
        outputs, seconds = [], []
        for which in ("first", "second"):
            output, code, took = _timed_call(console, call, deadline_s)
            if code != 0:
                raise RuntimeError(f"{name} {arguments} failed on its {which} call ({code}): {output}")
            outputs.append(output)
            seconds.append(took)
        built = f"bmbuild: built {name} in" in outputs[0] and "bmbuild: built" not in outputs[1]
        report = BUILT.search(outputs[0])
        times[name] = CallTimes(round(seconds[0], 3), round(seconds[1], 3), built, report.group(1) if report else "")
    return times


BUILT_BINARY = "/run/bm/cache/bin/{name}"  # where the builder keeps a built command (bmbuild's ensure)


def own_run_times(console: Console, commands: dict[str, str], deadline_s: float = 60.0) -> dict[str, float]:
    """Seconds of each built command run as itself (/run/bm/cache/bin/<name>), without its stub and the
    builder: what a second call costs over it is the builder's own overhead."""
    seconds = {}
    for name, arguments in commands.items():
        call = f"{BUILT_BINARY.format(name=name)} {arguments} 2>&1 >/dev/null"
        output, code, took = _timed_call(console, call, deadline_s)
        if code != 0:
            raise RuntimeError(f"the built {name} {arguments} failed ({code}): {output}")
        seconds[name] = round(took, 3)
    return seconds


# The guest's speed reference: the guest's own `go build` of the image's warm-up program (a small fixed
# program that `bmbuild -warmup` wrote to WARMUP_DIR), the work a first call without a plan does: the go
# command, the compiler's cache, the linker. It is timed from the host before the sweep, after every
# REFERENCE_EVERY commands and after the last, and the median judges it. A busy host slows it as it slows
# the first calls, because it is the same kind of work on the same QEMU threads (docs/gosource.md has the
# figures). It calls the go command directly, not our builder: a slower builder must not stretch its own
# budget. A slower toolchain does slow the reference too; the history's baseline is what sees that.
# Before it, the reference was a loop of the guest shell's arithmetic: one busy process on a 2-core host
# slowed the sweep 1.4-1.5 times and that loop 1.0-1.2 times, so the gate still flaked.
WARMUP_DIR = "/run/bm/warmup"
REFERENCE_OUTPUT = "/tmp/bm-speed-reference"
REFERENCE_BUILD = (
    # Truncated first: the go command would skip the link of an output whose build ID matches.
    f": > {REFERENCE_OUTPUT} && ( cd {WARMUP_DIR} && GOROOT=/go GOCACHE=/run/bm/gocache GOPATH=/run/bm/gopath"
    f" HOME=/run/bm {' '.join(f'{name}={value}' for name, value in BUILD_ENV.items())}"
    f" {PurePosixPath(STUB_INTERPRETER).with_name('go')} build -buildvcs=false -ldflags='-s -w'"
    f" -o {REFERENCE_OUTPUT} . )"
)
REFERENCE_EVERY = 8  # commands of the sweep between two timings of the speed reference
# A single call can be slowed by the host alone (grep once took 9.6 s on a quiet host where it takes
# about 1.5 s): the slowest commands of a sweep get their first call timed again, binary removed, and the
# gate judges the lower timing. Load only ever adds time, so the lower one is the nearer to the guest's.
RETIME_SLOWEST = 2


def speed_reference(console: Console, deadline_s: float = 300.0) -> float:
    """Seconds the guest takes for REFERENCE_BUILD now."""
    output, code, took = _timed_call(console, REFERENCE_BUILD, deadline_s)
    if code != 0:
        raise RuntimeError(f"the speed reference build failed ({code}): {output}")
    return round(took, 3)


@dataclass
class Sweep:
    warmup: float | None  # seconds waited for the warm-up build, or None (the guest runs none)
    calls: dict[str, CallTimes]
    references: tuple[float, ...]  # the speed reference's seconds, timed before, through and after the calls

    @property
    def reference(self) -> float:
        """The speed reference of the run: the median of its timings."""
        return round(statistics.median(self.references), 3)


def run_sweep(console: Console) -> Sweep:
    """The sweep of `bootmatrix run` and the benchmark: wait for the warm-up, then call every command of
    SWEEP twice, timing the speed reference before the first command, after every REFERENCE_EVERY
    commands and after the last."""
    warmup = wait_for_warmup(console)
    if warmup is None:  # the guest ran no warm-up (bm.warmup=0): write its program, untimed
        output, code = console.run(f"{STUB_INTERPRETER} -warmup", Deadline.after(300))
        if code != 0:
            raise RuntimeError(f"the warm-up build the speed reference needs failed ({code}): {output}")
    references = [speed_reference(console)]
    calls: dict[str, CallTimes] = {}
    names = list(SWEEP)
    for start in range(0, len(names), REFERENCE_EVERY):
        calls |= measure_calls(console, {name: SWEEP[name] for name in names[start:start + REFERENCE_EVERY]})
        references.append(speed_reference(console))
    retime_slowest(console, calls)
    return Sweep(warmup, calls, tuple(references))


def retime_slowest(console: Console, calls: dict[str, CallTimes], count: int = RETIME_SLOWEST) -> None:
    """Time the first call of the `count` slowest commands again (their built binary removed first, by
    the built rm, so no stub is involved) and keep it in their CallTimes.retimed."""
    for name in sorted(calls, key=lambda name: calls[name].first, reverse=True)[:count]:
        remove = f"{BUILT_BINARY.format(name='rm')} -f {BUILT_BINARY.format(name=name)}"
        output, code = console.run(remove, Deadline.after(60))
        if code != 0:
            raise RuntimeError(f"could not remove the built {name} to time its first call again: {output}")
        again = measure_calls(console, {name: SWEEP[name]})[name]
        if not again.built:
            raise RuntimeError(f"{name} was not built again after its binary was removed")
        calls[name].retimed = again.first


def judge_latency(  # noqa: PLR0917 - each is a distinct input of the verdict
    first_calls: dict[str, float], budget: CompileBudget, accel: str, baseline: float | None = None,
    reference: float | None = None, arch: str = "",
) -> LatencyVerdict:
    """The gate's verdict on one cell's first-call latencies (seconds by command).

    `reference`: the guest's speed reference measured in this run. When the budget names the reference
    it was set at, budgets are stretched by reference / that (never shrunk): a busy host once took gofmt
    from 3.6-4.1 s to 4.23 s and failed a 4.0 s budget. The baseline (earlier runs of this host) is
    stretched the same way. Every failure says what it was compared with."""
    if not first_calls:
        raise ValueError("no first-call latencies to judge")
    limits = budget.for_accel(accel)
    median = statistics.median(first_calls.values())
    slowest_command = max(first_calls, key=lambda name: first_calls[name])
    verdict = LatencyVerdict(median, first_calls[slowest_command], slowest_command)
    quiet = limits.reference.get(arch)
    if reference is not None and quiet is not None and reference > quiet:
        verdict.factor = round(reference / quiet, 2)
        verdict.compared = (f"the budget stretched x{verdict.factor:.2f}: the guest's speed reference took "
                            f"{reference:.2f} s in this run, {quiet:.2f} s where the budget was set")
    elif reference is not None and quiet is not None:
        verdict.compared = (f"the budget as written (speed reference {reference:.2f} s in this run, "
                            f"{quiet:.2f} s where it was set)")
    factor = verdict.factor
    if median > limits.median * factor:
        verdict.failures.append(f"median first call {median:.2f} s exceeds the {accel} budget "
                                f"{limits.median * factor:.2f} s ({verdict.compared})")
    if verdict.slowest > limits.max * factor:
        verdict.failures.append(f"slowest first call ({slowest_command}) {verdict.slowest:.2f} s exceeds the "
                                f"{accel} budget {limits.max * factor:.2f} s ({verdict.compared})")
    if baseline is not None and median > baseline * factor * (1 + budget.baseline_tolerance):
        verdict.failures.append(f"median first call {median:.2f} s exceeds the baseline {baseline:.2f} s"
                                f"{f' x{factor:.2f}' if factor != 1 else ''} by more than "
                                f"{budget.baseline_tolerance * 100:.0f} %")
    return verdict
