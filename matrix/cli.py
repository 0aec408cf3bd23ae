"""`bootmatrix`: the main job and the maintenance commands.

    bootmatrix run [MATRIX] [--cell ID] [--arch A] [--locked] [--dry-run]
                                                      boot cells, print the table, exit 1 if any failed
    bootmatrix run --arch A [--firmware F] --kernel K [--initrd I] [--append ...] [--ready REGEX]
                                                      the same for one cell of your own files (--iso,
                                                      --disk, --efi, --code/--vars, --bios, ...)
    bootmatrix console CELL | console --arch A --kernel K ...
                                                      boot a cell with this terminal on its console
    bootmatrix compare --firmware-set bookworm --firmware-set trixie [--repeat 3]
                                                      firmware regression check, exit 1 on a regression
    bootmatrix list [MATRIX]                          the cells of a matrix
    bootmatrix history [--cell ID] [--metric M]       trends of the metric history, PNG plots
    bootmatrix lock [--check] [--add NAME[:ARCH]]     re-resolve the Debian packages and rewrite the lock
                                                      (--check: report drift, write nothing; --add: lock
                                                      one more package for a `deb = ...` artifact)
    bootmatrix cache list | cache prune [--older-than DAYS | --all]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from arches import NAMES
from harness.accel import BadSetting, clear_verdicts, forced_accel
from harness.hostinfo import VM_MEMORY_BUDGET, memory_available_bytes
from harness.interactive import attach
from harness.machine import live_machines
from harness.paths import CannotWrite, as_cannot_write, writable_folder, writing
from harness.timeline import BOOT_PHASES, Phase
from images.artifacts import artifact_set
from images.debian.apt import AptError
from images.debian.download import pool as download_pool
from images.debian.drift import PackageStatus, check_lock
from images.debian.fetch import moved
from images.debian.lock import (
    DEFAULT_SUITE,
    FIRMWARE_SUITES,
    Indexes,
    LockError,
    Lockfile,
    add_package,
    lock_path,
    resolve_lock,
    set_resolvers,
)
from images.debian.mirror import MirrorNotFound, find_mirror
from images.manifest import MANIFEST_DIR, ManifestError, RecordingStore, load_manifest, write_manifest
from images.store import CorruptEntry, Store
from matrix import verify
from matrix.compare import FIRMWARE_PHASE, judge, sample_cell
from matrix.firmware import DISK, EFI, FIRMWARE_NAMES, KERNEL, default_firmware
from matrix.history import Gate, History, HistoryError, Metric, Row, check_gate
from matrix.kinds import RunCheck, kind_of
from matrix.lab import CellError, Lab
from matrix.lava import export as lava_export
from matrix.lava import local as lava_local
from matrix.lava import results as lava_results
from matrix.model import (
    ARTIFACT_KEYS,
    DEFAULT_MATRIX,
    FIRMWARE_SETS,
    Cell,
    GateSpec,
    MatrixError,
    cell_from_options,
    load_gates,
    load_matrix,
    matrix_path,
    select,
    shipped_matrices,
)
from matrix.profiles import needs_firmware_set
from matrix.report import junit_xml, plot_history, timeline_svg

# Wide enough for the table when output is a log file or CI, not a terminal.
out = Console() if sys.stdout.isatty() else Console(width=160)




def _artifact_cell(args: argparse.Namespace) -> Cell | None:
    """The one cell the artifact options describe (`run --arch riscv64 --kernel ./Image ...`), or None
    when no artifact option is given (the cells come from a matrix file)."""
    if not any(getattr(args, key, None) for key in ARTIFACT_KEYS):
        return None
    if len(args.arch) != 1:
        raise MatrixError("command line: --arch: give exactly one arch for a cell of your own artifacts")
    arch = args.arch[0]
    firmware = args.firmware
    if firmware is None and arch in NAMES:
        # The arch's default for what boots: QEMU's direct boot for a kernel, UEFI for an EFI
        # application, else the firmware that boots disks and CDs (matrix/firmware.py).
        firmware = default_firmware(arch, KERNEL if args.kernel else EFI if args.efi else DISK)
    login = None
    if args.login:
        user, _, password = args.login.partition(":")
        login = {"user": user, "password": password}
    values = {key: getattr(args, key) for key in ARTIFACT_KEYS} | {
        "arch": arch, "firmware": firmware, "append": args.append or "", "ready": args.ready, "login": login,
        "bad": tuple(args.bad or ()), "console": args.console_device,
        "machine_options": tuple(args.machine_option or ()),
        "timeout": args.timeout, "name": args.name, "memory_mib": args.memory, "smp": args.smp,
    }  # an option not given is None, which cell_from_options leaves out: the Cell's own default applies
    return cell_from_options(values, Path.cwd())


# Options that describe a cell of the user's own artifact; with a matrix file they would change nothing.
OWN_CELL_OPTIONS = ("firmware", "append", "ready", "login", "bad", "console_device", "machine_option", "timeout",
                    "name", "memory", "smp")


def _cells(args: argparse.Namespace) -> list[Cell]:
    for arch in args.arch:
        if arch not in NAMES:
            raise MatrixError(f"command line: --arch {arch!r} is not one of {', '.join(NAMES)}")
    own = _artifact_cell(args) if hasattr(args, "kernel") else None
    if own is not None:
        return [own]
    if hasattr(args, "kernel"):
        stray = [f"--{key.replace('_', '-')}" for key in OWN_CELL_OPTIONS if getattr(args, key, None) not in (None, [])]
        if stray:
            verb = "describes" if len(stray) == 1 else "describe"
            raise MatrixError(
                f"command line: {', '.join(stray)} {verb} a cell of your own artifact (--kernel, --iso, --disk, "
                f"--efi); with the matrix file {args.matrix} they would change nothing: set the cell's keys in it")
    cells = select(load_matrix(args.matrix), args.arch or None, args.cell or None)
    if not cells:
        raise MatrixError(f"{args.matrix}: no cell matches --arch {' --arch '.join(args.arch)}")
    return cells


def _add_artifact_options(command: argparse.ArgumentParser) -> None:
    """A cell of the user's own files on the command line, with the keys of a matrix file's cell."""
    group = command.add_argument_group(
        "your own artifact (instead of a matrix file; README 'Bring your own image')")
    group.add_argument("--firmware", choices=FIRMWARE_NAMES,
                       help="firmware of the arch (default: direct kernel boot, or the disk/UEFI one)")
    for key in ARTIFACT_KEYS:
        group.add_argument(f"--{key}", metavar="PATH", help=f"{key} file (relative to this folder)")
    group.add_argument("--append", help="kernel command line (console=<the arch's serial> is added)")
    group.add_argument("--ready", help="regex that means booted (default: a shell answers)")
    group.add_argument("--login", metavar="USER[:PASSWORD]", help="log in at a login: prompt, then expect a shell")
    group.add_argument("--bad", action="append", metavar="REGEX", help="fail at once on this output")
    group.add_argument("--console-device", help="the kernel's console device (\"\" for no console= option)")
    group.add_argument("--machine-option", action="append", help="added to -machine, e.g. acpi=off")
    group.add_argument("--timeout", type=float, help="seconds to readiness before it is a hang")
    group.add_argument("--name", help="the cell id's last part")
    group.add_argument("--memory", type=int, help="MiB of guest memory (default 512)")
    group.add_argument("--smp", type=int, help="virtual CPUs (default 1)")


def cmd_list(args: argparse.Namespace) -> int:
    table = Table("cell", "arch", "firmware", "media", "firmware set", "qemu", "accel")
    for cell in _cells(args):
        table.add_row(cell.id, cell.arch, cell.firmware, cell.media, cell.firmware_set, cell.qemu, cell.accel)
    out.print(table)
    shipped = ", ".join(f"{name} ({len(load_matrix(path))} cells)" for name, path in shipped_matrices().items())
    out.print(f"shipped matrices (bootmatrix run NAME, --bootmatrix-matrix=NAME): {shipped}", highlight=False)
    return 0


@dataclass
class CellRow:
    """One cell's line of a `bootmatrix run`: its table row, its entry in summary.json and junit.xml, and
    the metrics it adds to the history."""

    cell: str
    result: str = "unavailable"  # pass | fail | unavailable
    reason: str = ""
    accel: str = "-"
    accel_reason: str = ""
    qemu: str = "-"  # "pinned", "host"
    qemu_version: str = ""
    firmware_set: str | None = None
    firmware_versions: dict[str, str] = field(default_factory=dict)
    milestones: dict[str, float] = field(default_factory=dict)
    workdir: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    config: str = ""
    build_error: str = ""  # a build tool's whole output, when one failed
    console_tail: str = ""  # a failed boot's last console lines, escapes removed
    check: dict[str, object] = field(default_factory=dict)  # the image kind's extra check (matrix/kinds/)
    check_summary: str = "-"
    check_metrics: dict[str, float] = field(default_factory=dict)
    gates: list[str] = field(default_factory=list)  # breaches: the kind's check, then the history gates

    @property
    def passed(self) -> bool:
        return self.result == "pass" and not self.gates

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "qemu": f"{self.qemu} {self.qemu_version}".strip()}


def _seconds(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def _run_cell(lab: Lab, cell: Cell, folder: Path, check: RunCheck | None) -> CellRow:
    """Boot one cell to ready, then the image kind's extra check: the row, whatever happened (a failure
    of this cell never stops the run)."""
    row = CellRow(cell.id)
    try:
        outcome = lab.boot_and_check(cell, folder / cell.id, check.after_boot if check is not None else None)
    except CellError as error:  # cannot run here (unavailable), or broken: this cell fails, naming why
        row.result = "unavailable" if error.cannot_run else "fail"
        row.reason = str(error).splitlines()[0]
        row.build_error = error.detail if error.detail != str(error) else ""
        return row
    record = outcome.record
    row.result, row.reason = ("pass" if outcome.passed else "fail"), outcome.reason
    row.console_tail = outcome.console_tail
    row.milestones, row.accel, row.accel_reason = record.milestones, record.accel, record.accel_reason
    row.qemu, row.qemu_version = record.qemu, record.qemu_version
    row.firmware_set, row.firmware_versions = record.firmware_set, record.firmware_versions
    row.workdir, row.packages, row.config = str(outcome.workdir), record.packages, record.config
    return row


def _judge(history: History | None, gates: dict[str, GateSpec], run: str, row: CellRow,
           check: RunCheck | None) -> None:
    """The image kind's check and the history gates judge a passed row; its metrics join the history.
    Breaches go into row.gates."""
    if row.result != "pass":
        return
    if check is not None:

        def baseline(metric: str, min_runs: int) -> float | None:
            if history is None:
                return None
            found = history.baseline(row.cell, metric, row.accel, exclude_run=run, config=row.config, source="run")
            return found[0] if found and found[1] >= min_runs else None

        verdict = check.verdict(baseline)
        row.gates += verdict.failures
        row.check, row.check_summary, row.check_metrics = verdict.details, verdict.summary, verdict.metrics
    if history is None:
        return
    metrics = {f"t_{phase}": t for phase, t in row.milestones.items()} | row.check_metrics
    for metric, spec in gates.items():
        if metric in metrics:
            gate = Gate(metric, spec.tolerance, spec.slack, spec.min_runs)
            breach = check_gate(history, gate, row.cell, metrics[metric], accel=row.accel, run=run, config=row.config,
                                source="run")
            if breach:
                row.gates.append(breach)
    history.record(run, "run", [Metric(row.cell, name, value, "s", row.qemu_version, row.firmware_set or "-",
                                       row.accel, "", row.config) for name, value in metrics.items()])


def cmd_dry_run(cells: list[Cell], lab: Lab, folder: Path) -> int:
    """Print the QEMU argv of each cell (its files fetched and built as a real run would); boot nothing."""
    for cell in cells:
        try:
            machine, _ = lab.machine(cell, folder / cell.id)
        except CellError as error:
            out.print(f"[red]{error}[/]")
            return 1
        print(f"# {cell.id} (fds 3 and 4 stand for the harness's console and QMP socketpairs)")
        print(shlex.join(machine.planned_argv()))
    return 0


def auto_jobs() -> int:
    """`-j auto`: as many cells at once as there are cores and free memory holds VMs."""
    available = memory_available_bytes()
    cores = os.cpu_count() or 1
    return cores if available is None else max(1, min(cores, int(available // VM_MEMORY_BUDGET)))


class Interrupted(BaseException):
    """SIGTERM, raised in the main thread as Ctrl-C's KeyboardInterrupt is: the run stops and reports."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def new_folder(parent: Path, prefix: str, what: str) -> Path:
    """A folder of its own for this run under `parent`: `<prefix>-<time>`, or `-2`, `-3`, ... when another
    run started in the same second (mkdir is atomic: two runs never share one)."""
    writable_folder(parent, what)
    stem = f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    for number in range(1, 1000):
        candidate = parent / (stem if number == 1 else f"{stem}-{number}")
        try:
            with writing(what, candidate):
                candidate.mkdir()
        except CannotWrite as error:
            if isinstance(error.__cause__, FileExistsError):
                continue
            raise
        return candidate
    raise CannotWrite(what, parent / stem, "a thousand runs started in the same second")


def cmd_run(args: argparse.Namespace) -> int:
    cells = _cells(args)
    if args.dry_run:
        with tempfile.TemporaryDirectory(prefix="bootmatrix-dry-run-") as scratch:
            return cmd_dry_run(cells, Lab(locked=args.locked or None), Path(scratch))
    gates = {} if args.no_gates else load_gates(args.matrix)
    checks = {cell.id: None if args.no_gates else kind_of(cell).run_check(cell, args.matrix) for cell in cells}
    history = None if args.no_history else History(args.history)
    run = uuid.uuid4().hex
    folder = new_folder(args.results, "run", "--results")
    lab = Lab(locked=args.locked or None)
    jobs = auto_jobs() if args.jobs == "auto" else int(args.jobs)
    started = time.monotonic()
    history_lock = threading.Lock()

    def one(cell: Cell) -> CellRow:
        try:
            row = _run_cell(lab, cell, folder, checks[cell.id])
        except CannotWrite as error:
            row = CellRow(cell.id, "fail", str(error))
        except Exception as error:  # noqa: BLE001 - an unexpected error fails this cell alone, with its words
            problem = as_cannot_write(error, cell.id) if isinstance(error, OSError) else None
            row = CellRow(cell.id, "fail", str(problem) if problem else f"unexpected {type(error).__name__}: {error}")
        try:
            with history_lock:  # one writer of the history at a time
                _judge(history, gates, run, row, checks[cell.id])
            if row.milestones and row.workdir:
                Path(row.workdir, "timeline.svg").write_text(timeline_svg(cell.id, row.milestones))
        except Exception as error:  # noqa: BLE001 - a cell's report must not take the run down
            row.gates.append(f"recording the result failed: {type(error).__name__}: {error}")
        out.log(f"{cell.id}: {row.result}" + (" (gate breach)" if row.gates else ""))
        return row

    interrupted: str | None = None
    finished: set[int] = set()  # the cells done when an interruption came: their rows stand
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    pool = ThreadPoolExecutor(max_workers=jobs)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    futures = []
    try:
        with Progress(*columns, console=out, transient=True) as progress:
            task = progress.add_task(f"fetching, building, booting ({jobs} at a time)", total=len(cells))
            futures = [pool.submit(one, cell) for cell in cells]
            for future in futures:
                future.add_done_callback(lambda _: progress.advance(task))
            for future in futures:
                future.result()
    except (KeyboardInterrupt, Interrupted) as stop:
        interrupted = stop.args[0] if isinstance(stop, Interrupted) else "SIGINT"
        finished = {index for index, future in enumerate(futures) if future.done()}
        pool.shutdown(wait=False, cancel_futures=True)
        for machine in live_machines():  # a boot in progress ends now; its cell is reported interrupted
            try:
                machine.stop(timeout=2.0, check=False, told=True)  # QMP quit, then kill; writes result.json
            except Exception:  # noqa: BLE001 - a worker may be tearing it down at the same moment
                machine.kill()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if interrupted is None:
        pool.shutdown()
    rows = [futures[index].result() if interrupted is None or index in finished else
            CellRow(cell.id, "interrupted", f"the run was interrupted ({interrupted}) before this cell finished")
            for index, cell in enumerate(cells)]
    _print_table(cells, rows)
    for row in rows:
        if row.console_tail and not row.passed:
            where = f"{row.workdir}/console.log"
            out.print(f"[bold]{row.cell}[/]: last console lines (all of it: {where})", highlight=False)
            lines = row.console_tail.splitlines()[-8:]
            out.print(escape("\n".join(f"  | {line}" for line in lines)), highlight=False)
    breaches = [b for row in rows for b in row.gates]
    for breach in breaches:
        out.print(f"[red]{escape(breach)}[/]")
    drift = [str(m) for m in lab.drift()]
    for line in drift:
        out.print(f"[yellow]not the locked version (re-resolved: the locked file is gone): {line}[/]")
    summary = {"run": run, "cells": [row.as_json() for row in rows], "seconds": round(time.monotonic() - started, 1),
               "jobs": jobs, "history": str(history.path) if history else None, "package_drift": drift,
               "interrupted": interrupted}
    with writing("--results", folder):
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        (folder / "junit.xml").write_text(junit_xml("bootmatrix run", [row.as_json() for row in rows]))
    out.print(f"Report: {folder} (summary.json, junit.xml, <cell>/console.log, argv.txt, timeline.svg)")
    if interrupted is not None:
        out.print(f"[red]interrupted by {interrupted}: cells not finished are reported as interrupted[/]")
        return 128 + (signal.SIGTERM if interrupted == "SIGTERM" else signal.SIGINT)
    return 0 if rows and all(row.passed for row in rows) else 1


def _print_table(cells: list[Cell], rows: list[CellRow]) -> None:
    extra = sorted({kind_of(cell).summary_column for cell in cells} - {""})
    table = Table("cell", "result", *(f"{PHASE_COLUMNS[p]} s" for p in TABLE_PHASES), *extra, "accel", "QEMU", "reason",
                  title="bootmatrix run: seconds from QEMU start to each milestone")
    for cell, row in zip(cells, rows, strict=True):
        colour = "green" if row.passed else "red"
        reason = "; ".join([row.reason, *row.gates]).strip("; ")
        own = kind_of(cell).summary_column
        table.add_row(row.cell, f"[{colour}]{row.result}[/]", *(_seconds(row.milestones.get(p)) for p in TABLE_PHASES),
                      *(row.check_summary if column == own else "-" for column in extra), row.accel,
                      f"{row.qemu} {row.qemu_version}".strip(), escape(reason))
    out.print(table)


# The run table's column of each boot phase; an image's later phases (initrd, userspace: the Debian
# image's) are in summary.json, the history and the timeline, not the table.
TABLE_PHASES = tuple(p for p in BOOT_PHASES if p not in (Phase.INITRD, Phase.USERSPACE))
PHASE_COLUMNS = {Phase.FIRST_OUTPUT: "1st out", Phase.FIRMWARE: "firmware", Phase.BOOTLOADER: "loader",
                 Phase.KERNEL: "kernel", Phase.INIT: "init", Phase.READY: "ready"}


def cmd_console(args: argparse.Namespace) -> int:
    """Boot one cell and attach the terminal to its serial console (harness/interactive.py)."""
    own = _artifact_cell(args)
    if own is not None:
        cell = own
    else:
        if not args.cell_id:
            raise MatrixError("give a cell id (see `bootmatrix list`) or your own artifact (--kernel, --iso, ...)")
        cell = select(load_matrix(args.matrix), None, [args.cell_id])[0]
    folder = new_folder(args.results, "console", "--results")
    lab = Lab(locked=args.locked or None)
    try:
        machine, record = lab.machine(cell, folder / cell.id)
    except CellError as error:
        out.print(f"[red]cannot start: {error}[/]")
        return 1
    out.print(f"{cell.id}: {record.accel}, {record.qemu} QEMU {record.qemu_version}; logs in {machine.workdir}")
    with machine:
        session = attach(machine)
        machine.stop(check=False)
    out.print(f"{'detached' if session.detached else 'guest ended'}: {session.reason}")
    if not session.detached and session.problem is not None:
        out.print(f"[red]not a clean end: {session.problem}[/]", highlight=False)
    out.print(f"Report: {machine.workdir} (console.log, argv.txt, qmp-events.jsonl, qmp-commands.jsonl)")
    return 0 if session.detached or session.problem is None else 1


def cmd_history(args: argparse.Namespace) -> int:
    history = History(args.history)
    rows = history.rows(args.cell, args.metric)
    if not rows:
        out.print(f"no metrics in {history.path}" + (f" for {args.cell}" if args.cell else ""))
        return 0
    series: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        series.setdefault((row.cell, row.metric), []).append(row)
    table = Table("cell", "metric", "values", "runs", "first", "median", "last", "last vs median",
                  title=f"metric history: {history.path}")
    for (cell, metric), values in sorted(series.items()):
        numbers = [r.value for r in values][-args.last:]
        median = statistics.median(numbers)
        change = f"{(numbers[-1] / median - 1) * 100:+.0f} %" if median else "-"
        table.add_row(cell, metric, str(len(numbers)), str(len({r.run for r in values})), f"{numbers[0]:.3f}",
                      f"{median:.3f}", f"{numbers[-1]:.3f}", change)
    out.print(table)
    cells = sorted({cell for cell, _ in series})
    for cell in cells:
        target = args.plots / f"{cell}.png"
        plot_history([r for r in rows if r.cell == cell], target, f"{cell} on host {history.host}")
        out.print(f"plot: {target}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    if len(args.firmware_set) != 2:
        out.print("[red]error:[/] give --firmware-set twice: the baseline, then the candidate")
        return 2
    baseline_set, candidate_set = args.firmware_set
    cells = [c for c in _cells(args) if needs_firmware_set(c)]
    folder = new_folder(args.results, "compare", "--results")
    lab = Lab(locked=args.locked or None)
    table = Table("cell", baseline_set, candidate_set, f"{baseline_set} fw s", f"{candidate_set} fw s", "ratio",
                  f"{baseline_set} ready s", f"{candidate_set} ready s", "verdict",
                  title=f"firmware {baseline_set} vs {candidate_set}: medians of {args.repeat} boots; "
                        "fw = QEMU start to kernel start")
    regressions = 0
    report = []
    with out.status("booting") as status:
        for cell in cells:
            summaries = []
            for firmware in (baseline_set, candidate_set):
                status.update(f"[bold]{cell.id}[/] with {firmware}")
                summaries.append(sample_cell(lab, cell, firmware, args.repeat, folder))
            base, cand = summaries
            verdict = judge(base, cand)
            regressions += verdict is not None
            b_fw, c_fw = base.median(FIRMWARE_PHASE), cand.median(FIRMWARE_PHASE)
            ratio = f"{c_fw / b_fw:.2f}" if b_fw and c_fw else "-"
            missing = base.unavailable or cand.unavailable
            table.add_row(cell.id, base.result(), cand.result(), _seconds(b_fw), _seconds(c_fw), ratio,
                          _seconds(base.median("ready")), _seconds(cand.median("ready")),
                          f"[red]{verdict}[/]" if verdict else (missing or "[green]ok[/]"))
            report.append({"cell": cell.id, "verdict": verdict, "baseline": asdict(base), "candidate": asdict(cand)})
            out.log(f"{cell.id}: {verdict or 'ok'}")
    out.print(table)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    out.print(f"VM logs and compare.json: {folder}")
    return 1 if regressions else 0


def lock_hash() -> str:
    """sha256 of every shipped lock file: what CI keys its artifact cache on."""
    digest = hashlib.sha256()
    for suite in FIRMWARE_SUITES:
        digest.update(lock_path(suite).read_bytes())
    return digest.hexdigest()


def _locked_sets(suite: str) -> list[str]:
    """The set names in `suite`'s lock file as it is (a user's own sets too), or none if it is unreadable."""
    try:
        return list(Lockfile.load(lock_path(suite)).sets)
    except LockError:
        return []


def cmd_lock(args: argparse.Namespace) -> int:
    """Re-resolve the lock files (or, with --check, report their drift and write nothing)."""
    if args.hash:
        print(lock_hash())
        return 0
    suites = args.suite or ([DEFAULT_SUITE] if args.add else list(FIRMWARE_SUITES))
    if args.set:
        # `--set NAME` re-resolves NAME in the suites that have it (firmware is in both, the rest in
        # trixie only), and an unknown name is refused before any lock file is written.
        known = {suite: set(set_resolvers(suite)) | set(_locked_sets(suite)) for suite in suites}
        unknown = sorted(set(args.set) - set().union(*known.values()))
        if unknown:
            raise LockError(f"--set {unknown[0]}: no such package set in "
                            + " or ".join(lock_path(suite).name for suite in suites))
        suites = [suite for suite in suites if known[suite] & set(args.set)]
    store = Store()
    mirror = find_mirror()
    worst = 0
    for suite in suites:
        path = lock_path(suite)
        index = Indexes(store.root / "apt", mirror, suite)
        try:
            previous: Lockfile | None = Lockfile.load(path)
        except LockError:
            previous = None
        if args.check:
            if previous is None:
                out.print(f"[red]{path} is missing or malformed[/]")
                worst = max(worst, 1)
                continue
            worst = max(worst, _print_check(path, check_lock(previous, index, download_pool())))
            continue
        if args.add:
            if previous is None:
                raise LockError(f"{path} is missing or malformed: run `bootmatrix lock` first")
            for spec in args.add:
                package = add_package(index, previous, spec, artifact_set)
                out.print(f"added {package.name}:{package.arch} {package.version} as set "
                          f"{artifact_set(package.name, package.arch)}")
            previous.write()
            out.print(f"wrote {path}")
            continue
        resolution = resolve_lock(index, path, previous, frozenset(args.set) if args.set else None)
        for name, why in resolution.kept.items():
            out.print(f"[yellow]kept the locked {name} as it was: {why}[/]")
        if previous is not None:
            for name, packages in sorted(resolution.lock.sets.items()):
                for change in moved(name, previous.sets.get(name, []), packages):
                    out.print(f"{name}: {change}")
        resolution.lock.write()
        out.print(f"wrote {path}: " + ", ".join(f"{k} ({len(v)})" for k, v in sorted(resolution.lock.sets.items())))
    return worst


def _print_check(path: Path, statuses: list[PackageStatus]) -> int:
    """The drift table of one lock; 1 when a locked file is gone (a default run would re-resolve)."""
    table = Table("set", "package", "locked", "index now", "status", "pool file",
                  title=f"{path.name} against the mirror")
    notes: dict[str, None] = {}  # each index problem once, in order
    for status in statuses:
        if status.status == "current":
            continue
        colour = {"gone": "red", "superseded": "yellow", "new": "cyan"}.get(status.status, "magenta")
        locked = "-" if status.status == "new" else status.package.version
        table.add_row(status.set_name, f"{status.package.name}:{status.package.arch}", locked,
                      status.index_version or "-", f"[{colour}]{status.status}[/]",
                      f"HTTP {status.pool_http}" if status.pool_http is not None else "")
        if status.note:
            notes[status.note] = None
    kinds = ("current", "superseded", "gone", "unknown", "new")
    counts = {kind: sum(s.status == kind for s in statuses) for kind in kinds}
    if table.row_count:
        out.print(table)
    for note in notes:
        out.print(f"[magenta]{note}[/]")
    out.print(f"{path.name}: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    return 1 if counts["gone"] else 0


def cmd_cache(args: argparse.Namespace) -> int:
    store = Store()
    if args.action == "list":
        table = Table("key", "name", "size", "built", "last used", title=str(store.root))
        for entry in store.entries():
            try:
                manifest = entry.manifest()
            except CorruptEntry as error:
                table.add_row(entry.key[:16], f"[red]damaged: {error} (rebuilt when next used)[/]", "-", "-", "-")
                continue
            table.add_row(
                entry.key[:16], str(manifest["name"]), f"{int(manifest['size']) / 1e6:.1f} MB",
                datetime.fromtimestamp(float(manifest["created"])).strftime("%Y-%m-%d %H:%M"),
                datetime.fromtimestamp(entry.last_used()).strftime("%Y-%m-%d %H:%M"),
            )
        out.print(table)
        return 0
    removed = store.prune(None if args.all else args.older_than)
    out.print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}: " +
              ", ".join(e.key[:12] for e in removed))
    verdicts = clear_verdicts(store.root / "accel", None if args.all else args.older_than)
    out.print(f"removed {len(verdicts)} cached KVM verdict(s)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Every image of the matrices against the committed manifest: a table, the differences, exit 1 on any."""
    matrices = args.matrix or verify.default_matrices()
    suites = FIRMWARE_SUITES if not args.matrix else ()
    # Only the whole set, nothing skipped, judges the manifest's images that were not built (stale).
    whole = not args.matrix and not args.skip
    cache = Store().root  # a cache that is a file, or read-only, is one line here, before any build
    expected = {} if args.update else load_manifest(args.manifest)  # a bad manifest stops before any build
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(verify.empty_store(cache, args.keep)) if args.rebuild else RecordingStore(cache)
        if args.rebuild:
            out.print(f"building every image in an empty store: {store.root}")
        built = verify.build_images(Lab(store, locked=not args.allow_drift), matrices, suites, tuple(args.skip))
        for what, why in built.errors.items():
            out.print(f"[red]cannot build[/] {escape(what)}: {escape(why)}", soft_wrap=True, highlight=False)
        if args.update:
            if built.errors or built.drift:
                out.print("[red]error:[/] not written: the manifest is of images built from the lock, every one")
                return 1
            # Only the whole set removes the files of images no longer built; a matrix's own keeps the rest.
            changed = write_manifest(verify.records(built), args.manifest, prune=whole)
            out.print(f"{args.manifest}: {len(built.images)} images, {len(changed)} changed"
                      + (f": {escape(', '.join(changed))}" if changed else ""), highlight=False)
            return 0
        previous = Store(cache) if args.rebuild else None
        verdicts = verify.verify(built, store, expected, whole=whole, previous=previous)
    table = Table("image", "result", "manifest", "built here", "first difference", title=str(args.manifest))
    for verdict in verdicts:
        colour = "green" if verdict.status == "identical" else ("yellow" if verdict.passed else "red")
        table.add_row(escape(verdict.label), f"[{colour}]{verdict.status}[/]", verdict.expected, verdict.got,
                      escape(verdict.details[0]) if verdict.details else "")
    out.print(table)
    for verdict in verdicts:
        if verdict.details and verdict.status != "identical":
            out.print(f"{escape(verdict.label)}: {verdict.status}", highlight=False)
            for line in verdict.details[:40]:
                out.print(f"  {escape(line)}", soft_wrap=True, highlight=False)
            if len(verdict.details) > 40:
                out.print(f"  ... and {len(verdict.details) - 40} more")
    bad = sum(not v.passed for v in verdicts) + len(built.errors)
    out.print(f"{len(verdicts) - sum(not v.passed for v in verdicts)} of {len(verdicts)} images as in the manifest"
              + (f"; {bad} problem(s)" if bad else ""))
    return 1 if verify.failed(verdicts, built) else 0


def cmd_export(args: argparse.Namespace) -> int:
    """Each cell as a LAVA job, its device dictionary and its artifacts under --out."""
    cells = _cells(args)
    folder = writable_folder(args.out, "--out")
    jobs = lava_export.export(Lab(locked=args.locked or None), cells, folder, args.artifacts_url)
    out.print(f"{len(jobs)} LAVA job(s) in {folder}/jobs, device dictionaries in {folder}/devices; serve "
              f"{folder}/artifacts at {args.artifacts_url}", highlight=False)
    return 0


def cmd_lava_run(args: argparse.Namespace) -> int:
    """The exported jobs through this machine's lava-run (root), with the pinned QEMU where cells use it."""
    lab = Lab()
    commands = {}
    if args.qemu == "pinned":
        commands = {arch: lava_local.qemu_wrapper(lab.qemu("pinned"), arch, args.output / "bin") for arch in NAMES}
    try:
        runs = lava_local.run_exported(args.export, args.output, commands, args.cell or None, jobs=int(args.jobs),
                                       validate=args.validate)
    except (lava_local.LavaUnavailable, ValueError) as error:
        out.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True, highlight=False)
        return 2
    for run in runs:
        out.print(f"{run.cell}: lava-run {'--validate ' if args.validate else ''}exit {run.exit_code} in "
                  f"{run.seconds:.1f} s ({run.folder}/lava.log)", highlight=False)
    if args.validate:
        return 1 if any(run.exit_code for run in runs) else 0
    out.print(f"`bootmatrix import lava {args.output}` reads the results")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """A LAVA output folder's results as a run's summary.json, junit.xml, console logs and history rows."""
    try:
        results = lava_results.read_output(args.output)
    except lava_results.NotLavaOutput as error:
        out.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True, highlight=False)
        return 2
    folder = new_folder(args.results, "lava", "--results")
    history = None if args.no_history else History(args.history)
    run = uuid.uuid4().hex
    rows = []
    for result in results:
        workdir = folder / result.cell
        with writing("--results", workdir):
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "console.log").write_text(result.console + "\n")
            shutil.copyfile(result.folder / "lava.log", workdir / "lava.log")
        accel = "tcg" if result.definition.get("context", {}).get("no_kvm", True) else "kvm"
        config = lava_results.job_config(result.definition)
        row = CellRow(result.cell, "pass" if result.passed else "fail", result.reason, accel=accel, qemu="lava",
                      workdir=str(workdir), config=config, console_tail="" if result.passed else result.console_tail)
        rows.append(row)
        metrics = {"lava_boot_s": result.boot_seconds, "lava_job_s": result.job_seconds}
        if history is not None and result.passed:
            history.record(run, "lava", [Metric(row.cell, name, value, "s", "lava", "-", accel, config=config)
                                         for name, value in metrics.items() if value is not None])
    table = Table("cell", "result", "LAVA boot s", "LAVA job s", "reason")
    for result, row in zip(results, rows, strict=True):
        table.add_row(row.cell, "[green]pass[/]" if row.passed else "[red]fail[/]", _seconds(result.boot_seconds),
                      _seconds(result.job_seconds), escape(row.reason))
    out.print(table)
    summary = {"run": run, "source": "lava", "from": str(args.output), "cells": [row.as_json() for row in rows],
               "history": str(history.path) if history else None}
    with writing("--results", folder):
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        (folder / "junit.xml").write_text(junit_xml("bootmatrix lava", [row.as_json() for row in rows]))
    out.print(f"Report: {folder} (summary.json, junit.xml, <cell>/console.log, lava.log)")
    return 0 if all(row.passed for row in rows) else 1


def _at_least_one(value: str) -> int:
    if not value.lstrip("-").isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give a whole number, 1 or more")
    return int(value)


def _days(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give a number of days, 0 or more") from None
    if not days >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{value!r}: give a number of days, 0 or more")
    return days


def cmd_doctor(args: argparse.Namespace) -> int:
    """What this host has and lacks; exit 1 when the default matrix cannot run here."""
    from matrix import host_packages
    from matrix.doctor import examine

    if args.fix:
        code = host_packages.install(host_packages.missing())
        if code != 0:
            return code
    report = examine()
    table = Table("capability", "", "what this host has", title="bootmatrix doctor")
    for capability in report.capabilities:
        mark = {True: "[green]ok[/]", False: "[red]missing[/]", None: "[yellow]info[/]"}[capability.ok]
        table.add_row(capability.name, mark, escape(capability.detail))
    out.print(table)
    out.print(f"cache: {report.cache}", highlight=False)
    if report.missing:
        line = host_packages.install_line(report.missing)
        out.print(f"to install what is missing: {'' if os.geteuid() == 0 else 'sudo '}{line}   (or: bootmatrix "
                  "doctor --fix)", highlight=False)
    runs = report.default_matrix_runs
    out.print("the default matrix can run here" if runs else "[red]the default matrix cannot run here[/]")
    return 0 if runs else 1


def cmd_init(args: argparse.Namespace) -> int:
    from matrix.starter import write_starter

    with writing("bootmatrix init", args.folder):
        written, kept = write_starter(args.folder, lock_hash())
    for path in written:
        out.print(f"wrote {path}", highlight=False)
    for path in kept:
        out.print(f"[yellow]kept {path} as it is (it exists)[/]", highlight=False)
    out.print("next: pytest -n auto   (the cells: bootmatrix list boot.toml)")
    return 0


def _jobs(value: str) -> str:
    if value != "auto" and not (value.isdigit() and int(value) >= 1):
        raise argparse.ArgumentTypeError(f"{value!r}: give a number of cells (1 or more) or auto")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="bootmatrix", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    top.add_argument("-v", "--verbose", action="store_true")
    sub = top.add_subparsers(dest="command", required=True)
    for name, func in (("run", cmd_run), ("list", cmd_list)):
        command = sub.add_parser(name)
        command.add_argument("matrix", nargs="?", type=matrix_path, default=DEFAULT_MATRIX,
                             help="a matrix file, or the name of a shipped one (bootmatrix list shows them)")
        command.add_argument("--cell", action="append", default=[])
        command.add_argument("--arch", action="append", default=[])
        command.set_defaults(func=func)
    run = sub.choices["run"]
    _add_artifact_options(run)
    run.add_argument("--dry-run", action="store_true", help="print each cell's QEMU argv; boot nothing")
    run.add_argument("--results", type=Path, default=Path("results"))
    run.add_argument("--history", type=Path, default=None, help="SQLite metric history (default: user data dir)")
    run.add_argument("--no-history", action="store_true", help="neither record metrics nor check gates")
    run.add_argument("--no-gates", action="store_true", help="record metrics but check no gate")
    run.add_argument("-j", "--jobs", default="auto", type=_jobs,
                     help="cells booted at once (default auto: the cores, and no more VMs than free memory holds)")
    history = sub.add_parser("history", help="trends of the metric history, and plots")
    history.add_argument("--history", type=Path, default=None)
    history.add_argument("--cell", default=None)
    history.add_argument("--metric", default=None)
    history.add_argument("--last", type=int, default=20, help="values per series in the table")
    history.add_argument("--plots", type=Path, default=Path("results/history"), help="where PNG plots go")
    history.set_defaults(func=cmd_history)
    compare = sub.add_parser("compare", help="boot the firmware cells with two firmware sets, side by side")
    compare.add_argument("matrix", nargs="?", type=matrix_path, default=DEFAULT_MATRIX)
    compare.add_argument("--firmware-set", action="append", default=[], choices=list(FIRMWARE_SETS),
                         help="twice: the baseline, then the candidate")
    compare.add_argument("--repeat", type=_at_least_one, default=3,
                         help="boots per cell and set (medians are compared)")
    compare.add_argument("--cell", action="append", default=[])
    compare.add_argument("--arch", action="append", default=[])
    compare.add_argument("--results", type=Path, default=Path("results"))
    compare.set_defaults(func=cmd_compare)
    console = sub.add_parser("console", help="boot one cell and attach this terminal to its serial console")
    console.add_argument("cell_id", nargs="?", help="a cell of the matrix file (or give your own artifact)")
    console.add_argument("--matrix", type=matrix_path, default=DEFAULT_MATRIX)
    console.add_argument("--arch", action="append", default=[])
    console.add_argument("--results", type=Path, default=Path("results"))
    _add_artifact_options(console)
    console.set_defaults(func=cmd_console)
    for command in (run, compare, console):
        command.add_argument(
            "--locked", action="store_true",
            help="a locked package gone from the mirror is an error, not re-resolved (also BOOTMATRIX_LOCKED=1)")
    lock = sub.add_parser("lock", help="re-resolve the Debian packages of every suite and rewrite the lock files")
    lock.add_argument("--check", action="store_true",
                      help="report drift (superseded, gone, unknown) without writing; exit 1 if a file is gone")
    lock.add_argument("--suite", action="append", default=[], choices=list(FIRMWARE_SUITES))
    lock.add_argument("--add", action="append", default=[], metavar="NAME[:ARCH][=VERSION]",
                      help="lock one more package (for a matrix's `deb = ...` artifact), keeping the rest as it is")
    lock.add_argument("--set", action="append", default=[], metavar="SET",
                      help="re-resolve only this package set (repeatable), keeping every other set as it is")
    lock.add_argument("--hash", action="store_true", help="print the lock files' sha256 (a CI cache key) and stop")
    lock.set_defaults(func=cmd_lock)
    doctor = sub.add_parser("doctor", help="what this host has and lacks for each capability, and the fix")
    doctor.add_argument("--fix", action="store_true", help="install the missing Debian packages (root or sudo)")
    doctor.set_defaults(func=cmd_doctor)
    init = sub.add_parser("init", help="write a starter into a repository: matrix, test, pytest.ini, CI")
    init.add_argument("folder", nargs="?", type=Path, default=Path("."))
    init.set_defaults(func=cmd_init)
    check = sub.add_parser("verify", help="compare every image built here with the committed manifest of its bytes")
    check.add_argument("matrix", nargs="*", type=matrix_path,
                       help="only these matrices' images (default: every shipped matrix and firmware set)")
    check.add_argument("--update", action="store_true", help="write the manifest from the images built here")
    check.add_argument("--rebuild", action="store_true",
                       help="build every image in an empty store first (the .debs are shared)")
    check.add_argument("--keep", action="store_true", help="with --rebuild: keep that store (its path is printed)")
    check.add_argument("--skip", action="append", default=[], metavar="CELL_GLOB",
                       help="leave out the images of cells whose id matches (repeatable; their manifest "
                            "entries are not judged)")
    check.add_argument("--manifest", type=Path, default=MANIFEST_DIR, help="the manifest folder")
    check.add_argument("--allow-drift", action="store_true",
                       help="re-resolve locked packages gone from the mirror; their images are 'not comparable'")
    check.set_defaults(func=cmd_verify)
    export = sub.add_parser("export", help="each cell of a matrix as a job for another system (LAVA)")
    export.add_argument("target", choices=["lava"])
    export.add_argument("matrix", nargs="?", type=matrix_path, default=DEFAULT_MATRIX)
    export.add_argument("--cell", action="append", default=[])
    export.add_argument("--arch", action="append", default=[])
    export.add_argument("--out", type=Path, required=True, help="jobs/, devices/, artifacts/ and export.json go here")
    export.add_argument("--artifacts-url", required=True, help="where the lab will serve OUT/artifacts")
    export.add_argument("--locked", action="store_true")
    export.set_defaults(func=cmd_export)
    lava_run = sub.add_parser("lava-run", help="run exported LAVA jobs on this machine's lava-dispatcher (root)")
    lava_run.add_argument("export", type=Path, help="a `bootmatrix export lava` folder")
    lava_run.add_argument("--output", type=Path, required=True, help="one folder per job: job.yaml, lava.log")
    lava_run.add_argument("--cell", action="append", default=[])
    lava_run.add_argument("--qemu", choices=["pinned", "host"], default="pinned",
                          help="the QEMU the device dictionaries run (host: qemu-system-<arch> on PATH)")
    lava_run.add_argument("-j", "--jobs", type=_at_least_one, default=1)
    lava_run.add_argument("--validate", action="store_true", help="only have the dispatcher check each job; exit 1 "
                          "if one is refused")
    lava_run.set_defaults(func=cmd_lava_run)
    imported = sub.add_parser("import", help="results of another system (LAVA) as a run's reports and history")
    imported.add_argument("target", choices=["lava"])
    imported.add_argument("output", type=Path, help="a LAVA output folder: one folder per job (job.yaml, lava.log)")
    imported.add_argument("--results", type=Path, default=Path("results"))
    imported.add_argument("--history", type=Path, default=None)
    imported.add_argument("--no-history", action="store_true")
    imported.set_defaults(func=cmd_import)
    cache = sub.add_parser("cache")
    cache.add_argument("action", choices=["list", "prune"])
    cache.add_argument("--older-than", type=_days, default=30.0, metavar="DAYS")
    cache.add_argument("--all", action="store_true")
    cache.set_defaults(func=cmd_cache)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        forced_accel()  # a bad BOOTMATRIX_ACCEL is a usage error before anything is built
        code = int(args.func(args))
    except (MatrixError, MirrorNotFound, AptError, LockError, CannotWrite, HistoryError, BadSetting,
            ManifestError) as error:
        # One line each, however long; the words are the user's (a regex's brackets are not markup).
        out.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True, highlight=False)
        return 2
    except KeyboardInterrupt:  # outside a run's cells (loading, a lock, a prune): no traceback, nothing to report
        out.print("[red]interrupted[/]")
        return 130
    if code in (130, 143) and args.command == "run":
        # Cells still building in worker threads must not hold the exit: the report is written, VMs
        # are killed; build scratch folders are cleaned by the next run (images/store.py).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
