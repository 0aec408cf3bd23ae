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
import json
import logging
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from arches import NAMES
from harness.accel import clear_verdicts
from harness.interactive import attach
from harness.machine import Machine
from images.artifacts import ArtifactError, artifact_set
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
)
from images.debian.mirror import MirrorNotFound, find_mirror
from images.store import Store
from images.tools import BuildError
from matrix.compare import FIRMWARE_PHASE, judge, sample_cell
from matrix.firmware import DISK, EFI, FIRMWARE_NAMES, KERNEL, default_firmware
from matrix.history import Gate, History, Metric, Row, check_gate
from matrix.lab import BootRecord, Lab, Unavailable
from matrix.latency import FIRST_CALL_MEDIAN, judge_latency, run_sweep
from matrix.model import (
    ARTIFACT_KEYS,
    DEFAULT_MATRIX,
    FIRMWARE_SETS,
    Cell,
    CompileBudget,
    GateSpec,
    MatrixError,
    cell_from_options,
    load_compile_budget,
    load_gates,
    load_matrix,
    select,
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
        "arch": arch, "firmware": firmware, "append": args.append, "ready": args.ready, "login": login,
        "bad": tuple(args.bad), "console": args.console_device, "machine_options": tuple(args.machine_option),
        "timeout": args.timeout, "name": args.name, "memory_mib": args.memory, "smp": args.smp,
    }
    return cell_from_options(values, Path.cwd())


def _cells(args: argparse.Namespace) -> list[Cell]:
    own = _artifact_cell(args) if hasattr(args, "kernel") else None
    if own is not None:
        return [own]
    return select(load_matrix(args.matrix), args.arch or None, args.cell or None)


def _add_artifact_options(command: argparse.ArgumentParser) -> None:
    """A cell of the user's own files on the command line, with the keys of a matrix file's cell."""
    group = command.add_argument_group(
        "your own artifact (instead of a matrix file; README 'Bring your own image')")
    group.add_argument("--firmware", choices=FIRMWARE_NAMES,
                       help="firmware of the arch (default: direct kernel boot, or the disk/UEFI one)")
    for key in ARTIFACT_KEYS:
        group.add_argument(f"--{key}", metavar="PATH", help=f"{key} file (relative to this folder)")
    group.add_argument("--append", default="", help="kernel command line (console=<the arch's serial> is added)")
    group.add_argument("--ready", help="regex that means booted (default: a shell answers)")
    group.add_argument("--login", metavar="USER[:PASSWORD]", help="log in at a login: prompt, then expect a shell")
    group.add_argument("--bad", action="append", default=[], metavar="REGEX", help="fail at once on this output")
    group.add_argument("--console-device", help="the kernel's console device (\"\" for no console= option)")
    group.add_argument("--machine-option", action="append", default=[], help="added to -machine, e.g. acpi=off")
    group.add_argument("--timeout", type=float, help="seconds to readiness before it is a hang")
    group.add_argument("--name", help="the cell id's last part")
    group.add_argument("--memory", type=int, default=512, help="MiB of guest memory")
    group.add_argument("--smp", type=int, default=1)


def cmd_list(args: argparse.Namespace) -> int:
    table = Table("cell", "arch", "firmware", "media", "firmware set", "qemu", "accel")
    for cell in _cells(args):
        table.add_row(cell.id, cell.arch, cell.firmware, cell.media, cell.firmware_set, cell.qemu, cell.accel)
    out.print(table)
    return 0


PHASES = ("first-output", "bootloader", "kernel", "init", "ready")


def _seconds(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else "-"


def _compile_sweep(row: dict[str, object]) -> Callable[[Machine, BootRecord], None]:
    """After boot: call every command of the sweep twice, keep the times in row['compile']."""

    def sweep(machine: Machine, record: BootRecord) -> None:
        try:
            row["warmup_wait"], calls = run_sweep(machine.console)
        except RuntimeError as error:
            row["compile_error"] = str(error)
            return
        row["compile"] = {name: asdict(times) for name, times in calls.items()}

    return sweep


def _run_cell(lab: Lab, cell: Cell, folder: Path, budget: CompileBudget | None = None) -> dict[str, object]:
    row: dict[str, object] = {"cell": cell.id, "result": "unavailable", "accel": "-", "qemu": "-", "milestones": {}}
    then = _compile_sweep(row) if budget is not None and cell.image == "gosource" else None
    try:
        outcome = lab.boot_and_check(cell, folder / cell.id, then)
    except Unavailable as error:
        row.update(reason=str(error).splitlines()[0])
        return row
    except BuildError as error:  # this cell fails with the tool's words; the other cells go on
        row.update(result="fail", reason=" ".join(str(error).split())[:600], build_error=str(error))
        return row
    except ArtifactError as error:  # a user's file that cannot be had: this cell fails, naming it
        row.update(result="fail", reason=str(error).splitlines()[0])
        return row
    record = outcome.record
    row.update(
        result="pass" if outcome.passed else "fail", reason=outcome.reason, milestones=record.milestones,
        accel=record.accel, accel_reason=record.accel_reason, qemu=f"{record.qemu} {record.qemu_version}",
        firmware_set=record.firmware_set, firmware_versions=record.firmware_versions, workdir=str(outcome.workdir),
        packages=record.packages, config=record.config,
    )
    return row


def _compile_gate(history: History | None, budget: CompileBudget, run: str, row: dict[str, object]) -> list[str]:
    """The compile-latency verdict of a row with a sweep (matrix/latency.py); its median joins the metrics."""
    if "compile_error" in row:
        return [f"compile sweep failed: {row['compile_error']}"]
    calls = row.get("compile")
    if not isinstance(calls, dict):
        return []
    baseline = None
    if history is not None:
        found = history.baseline(str(row["cell"]), FIRST_CALL_MEDIAN, str(row["accel"]), exclude_run=run,
                                 config=str(row.get("config", "")), source="run")
        baseline = found[0] if found and found[1] >= budget.min_runs else None
    verdict = judge_latency({name: float(t["first"]) for name, t in calls.items()}, budget, str(row["accel"]),
                            baseline)
    row["compile_median"], row["compile_max"] = verdict.median, verdict.slowest
    not_built = sorted(name for name, t in calls.items() if not t["built"])
    return [f"{row['cell']}: {failure}" for failure in verdict.failures] + (
        [f"{row['cell']}: not built on first call, or rebuilt on the second: {not_built}"] if not_built else [])


def _record_and_gate(
    history: History | None, gates: dict[str, GateSpec], run: str, row: dict[str, object],
    budget: CompileBudget | None = None,
) -> None:
    """Gate the row's metrics against the history and the compile budget, then add them to the history.
    Breaches go into row['gates']."""
    milestones = row.get("milestones")
    if row["result"] != "pass" or not isinstance(milestones, dict):
        return
    breaches = _compile_gate(history, budget, run, row) if budget is not None else []
    row["gates"] = breaches
    if history is None:
        return
    cell, accel = str(row["cell"]), str(row["accel"])
    metrics = {f"t_{phase}": float(t) for phase, t in milestones.items()}
    if isinstance(row.get("compile_median"), float):
        metrics[FIRST_CALL_MEDIAN] = float(row["compile_median"])  # type: ignore[arg-type]
    for metric, spec in gates.items():
        if metric in metrics:
            gate = Gate(metric, spec.tolerance, spec.slack, spec.min_runs)
            breach = check_gate(history, gate, cell, metrics[metric], accel=accel, run=run,
                                config=str(row.get("config", "")), source="run")
            if breach:
                breaches.append(breach)
    qemu_version = str(row["qemu"]).split()[-1]
    firmware_set = str(row.get("firmware_set") or "-")
    history.record(run, "run", [Metric(cell, name, value, "s", qemu_version, firmware_set, accel, "",
                                       str(row.get("config", ""))) for name, value in metrics.items()])


def _breaches(row: dict[str, object]) -> list[str]:
    found = row.get("gates")
    return [str(b) for b in found] if isinstance(found, list) else []


def cmd_dry_run(cells: list[Cell], lab: Lab, folder: Path) -> int:
    """Print the QEMU argv of each cell (its files fetched and built as a real run would); boot nothing."""
    for cell in cells:
        try:
            machine, _ = lab.machine(cell, folder / cell.id)
        except (Unavailable, BuildError, ArtifactError) as error:
            out.print(f"[red]{error}[/]")
            return 1
        print(f"# {cell.id} (fds 3 and 4 stand for the harness's console and QMP socketpairs)")
        print(shlex.join(machine.planned_argv()))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cells = _cells(args)
    if args.dry_run:
        with tempfile.TemporaryDirectory(prefix="bootmatrix-dry-run-") as scratch:
            return cmd_dry_run(cells, Lab(locked=args.locked or None), Path(scratch))
    gates = {} if args.no_gates else load_gates(args.matrix)
    budget = None if args.no_gates else load_compile_budget(args.matrix)
    history = None if args.no_history else History(args.history)
    run = uuid.uuid4().hex
    folder = args.results / datetime.now().strftime("run-%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    lab = Lab(locked=args.locked or None)
    rows = []
    started = time.monotonic()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=out, transient=True) as progress:
        task = progress.add_task("preparing", total=len(cells))
        for cell in cells:
            progress.update(task, description=f"[bold]{cell.id}[/]: fetching, building, booting")
            row = _run_cell(lab, cell, folder, budget)
            _record_and_gate(history, gates, run, row, budget)
            rows.append(row)
            milestones = row["milestones"] if isinstance(row["milestones"], dict) else {}
            if milestones and "workdir" in row:
                Path(str(row["workdir"]), "timeline.svg").write_text(timeline_svg(cell.id, milestones))
            out.log(f"{cell.id}: {row['result']}" + (" (gate breach)" if _breaches(row) else ""))
            progress.advance(task)
    table = Table("cell", "result", *(f"{p} s" for p in ("1st out", "loader", "kernel", "init", "ready")),
                  "compile med/max", "accel", "QEMU", "reason",
                  title="bootmatrix run: seconds from QEMU start to each milestone; first-call compile latency")
    for row in rows:
        failed = row["result"] != "pass" or _breaches(row)
        colour = "red" if failed else "green"
        milestones = row["milestones"] if isinstance(row["milestones"], dict) else {}
        reason = "; ".join([str(row.get("reason") or ""), *_breaches(row)]).strip("; ")
        table.add_row(str(row["cell"]), f"[{colour}]{row['result']}[/]",
                      *(_seconds(milestones.get(p)) for p in PHASES),
                      f"{_seconds(row.get('compile_median'))}/{_seconds(row.get('compile_max'))}"
                      if "compile_median" in row else "-", str(row["accel"]), str(row["qemu"]), reason)
    out.print(table)
    breaches = [b for row in rows for b in _breaches(row)]
    for breach in breaches:
        out.print(f"[red]{breach}[/]")
    drift = [str(m) for m in lab.drift()]
    for line in drift:
        out.print(f"[yellow]not the locked version (re-resolved: the locked file is gone): {line}[/]")
    summary = {"run": run, "cells": rows, "seconds": round(time.monotonic() - started, 1),
               "history": str(history.path) if history else None, "package_drift": drift}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (folder / "junit.xml").write_text(junit_xml("bootmatrix run", rows))
    out.print(f"Report: {folder} (summary.json, junit.xml, <cell>/console.log, argv.txt, timeline.svg)")
    passed = bool(rows) and all(r["result"] == "pass" for r in rows)
    return 0 if passed and not breaches else 1


def cmd_console(args: argparse.Namespace) -> int:
    """Boot one cell and attach the terminal to its serial console (harness/interactive.py)."""
    own = _artifact_cell(args)
    if own is not None:
        cell = own
    else:
        if not args.cell_id:
            raise MatrixError("give a cell id (see `bootmatrix list`) or your own artifact (--kernel, --iso, ...)")
        cell = select(load_matrix(args.matrix), None, [args.cell_id])[0]
    folder = args.results / datetime.now().strftime("console-%Y%m%d-%H%M%S")
    lab = Lab(locked=args.locked or None)
    try:
        machine, record = lab.machine(cell, folder / cell.id)
    except (Unavailable, BuildError, ArtifactError) as error:
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
    folder = args.results / datetime.now().strftime("compare-%Y%m%d-%H%M%S")
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


def cmd_lock(args: argparse.Namespace) -> int:
    """Re-resolve the lock files (or, with --check, report their drift and write nothing)."""
    store = Store()
    mirror = find_mirror()
    worst = 0
    for suite in args.suite or ([DEFAULT_SUITE] if args.add else FIRMWARE_SUITES):
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
        resolution = resolve_lock(index, path, previous)
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
            manifest = entry.manifest()
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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="bootmatrix", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    top.add_argument("-v", "--verbose", action="store_true")
    sub = top.add_subparsers(dest="command", required=True)
    for name, func in (("run", cmd_run), ("list", cmd_list)):
        command = sub.add_parser(name)
        command.add_argument("matrix", nargs="?", type=Path, default=DEFAULT_MATRIX)
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
    history = sub.add_parser("history", help="trends of the metric history, and plots")
    history.add_argument("--history", type=Path, default=None)
    history.add_argument("--cell", default=None)
    history.add_argument("--metric", default=None)
    history.add_argument("--last", type=int, default=20, help="values per series in the table")
    history.add_argument("--plots", type=Path, default=Path("results/history"), help="where PNG plots go")
    history.set_defaults(func=cmd_history)
    compare = sub.add_parser("compare", help="boot the firmware cells with two firmware sets, side by side")
    compare.add_argument("matrix", nargs="?", type=Path, default=DEFAULT_MATRIX)
    compare.add_argument("--firmware-set", action="append", default=[], choices=list(FIRMWARE_SETS),
                         help="twice: the baseline, then the candidate")
    compare.add_argument("--repeat", type=int, default=3, help="boots per cell and set (medians are compared)")
    compare.add_argument("--cell", action="append", default=[])
    compare.add_argument("--arch", action="append", default=[])
    compare.add_argument("--results", type=Path, default=Path("results"))
    compare.set_defaults(func=cmd_compare)
    console = sub.add_parser("console", help="boot one cell and attach this terminal to its serial console")
    console.add_argument("cell_id", nargs="?", help="a cell of the matrix file (or give your own artifact)")
    console.add_argument("--matrix", type=Path, default=DEFAULT_MATRIX)
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
    lock.set_defaults(func=cmd_lock)
    cache = sub.add_parser("cache")
    cache.add_argument("action", choices=["list", "prune"])
    cache.add_argument("--older-than", type=float, default=30.0, metavar="DAYS")
    cache.add_argument("--all", action="store_true")
    cache.set_defaults(func=cmd_cache)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except (MatrixError, MirrorNotFound, AptError, LockError) as error:
        out.print(f"[red]error:[/] {error}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
