"""`bootmatrix`: the main job and the maintenance commands.

    bootmatrix run [MATRIX] [--cell ID] [--arch A]   boot cells, print the table, exit 1 if any failed
    bootmatrix list [MATRIX]                          the cells of a matrix
    bootmatrix lock                                   re-resolve the Debian packages and rewrite the lock
    bootmatrix cache list | cache prune [--older-than DAYS | --all]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.deadline import Deadline
from harness.errors import MachineError
from images.debian.apt import PrivateApt
from images.debian.lock import (
    DEFAULT_SUITE,
    FIRMWARE_SUITES,
    lock_path,
    resolve_firmware_lock,
    resolve_lock,
)
from images.debian.mirror import MirrorNotFound, find_mirror
from images.store import Store
from matrix.lab import Lab, Unavailable
from matrix.model import DEFAULT_MATRIX, Cell, MatrixError, load_matrix, select

# Wide enough for the table when output is a log file or CI, not a terminal.
out = Console() if sys.stdout.isatty() else Console(width=160)


def _cells(args: argparse.Namespace) -> list[Cell]:
    return select(load_matrix(args.matrix), args.arch or None, args.cell or None)


def cmd_list(args: argparse.Namespace) -> int:
    table = Table("cell", "arch", "firmware", "media", "qemu", "accel")
    for cell in _cells(args):
        table.add_row(cell.id, cell.arch, cell.firmware, cell.media, cell.qemu, cell.accel)
    out.print(table)
    return 0


def _run_cell(lab: Lab, cell: Cell, folder: Path) -> dict[str, object]:
    row: dict[str, object] = {"cell": cell.id, "result": "fail", "ready_s": None, "accel": "-", "qemu": "-"}
    try:
        machine, record = lab.machine(cell, folder / cell.id)
    except Unavailable as error:
        row.update(result="unavailable", reason=str(error).splitlines()[0])
        return row
    row.update(accel=record.accel, accel_reason=record.accel_reason, qemu=f"{record.qemu} {record.qemu_version}")
    budget = lab.boot_budget(cell, record.accel)
    try:
        with machine:
            lab.boot(machine, record, Deadline.after(budget))
            output, code = machine.console.run("echo $((6*7))", Deadline.after(budget))
            if (output, code) != ("42", 0):
                raise MachineError(f"shell check returned {output!r} / {code}, expected '42' / 0")
            row.update(result="pass", ready_s=record.time_to_ready, milestones=record.milestones)
    except MachineError as error:
        row.update(reason=str(error).splitlines()[0], milestones=record.milestones)
    row["workdir"] = str(folder / cell.id)
    return row


def cmd_run(args: argparse.Namespace) -> int:
    cells = _cells(args)
    folder = args.results / datetime.now().strftime("run-%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    lab = Lab()
    rows = []
    started = time.monotonic()
    with out.status("preparing") as status:
        for cell in cells:
            status.update(f"[bold]{cell.id}[/]: fetching, building and booting")
            rows.append(_run_cell(lab, cell, folder))
            out.log(f"{cell.id}: {rows[-1]['result']}")
    table = Table("cell", "result", "time to ready", "accelerator", "QEMU", "reason", title="bootmatrix run")
    for row in rows:
        colour = {"pass": "green"}.get(str(row["result"]), "red")
        ready = f"{row['ready_s']:.2f} s" if isinstance(row["ready_s"], float) else "-"
        table.add_row(str(row["cell"]), f"[{colour}]{row['result']}[/]", ready, str(row["accel"]), str(row["qemu"]),
                      str(row.get("reason", "")))
    out.print(table)
    summary = {"cells": rows, "seconds": round(time.monotonic() - started, 1)}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    out.print(f"VM logs and summary.json: {folder}")
    return 0 if rows and all(r["result"] == "pass" for r in rows) else 1


def cmd_lock(args: argparse.Namespace) -> int:
    store = Store()
    mirror = find_mirror()
    for suite in FIRMWARE_SUITES:
        apt = PrivateApt(store.root / "apt" / suite, mirror, suite)
        path = lock_path(suite)
        lock = resolve_lock(apt, path) if suite == DEFAULT_SUITE else resolve_firmware_lock(apt, path)
        lock.write()
        out.print(f"wrote {path}: " + ", ".join(f"{k} ({len(v)})" for k, v in sorted(lock.sets.items())))
    return 0


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
    sub.choices["run"].add_argument("--results", type=Path, default=Path("results"))
    lock = sub.add_parser("lock", help="re-resolve the Debian packages of every suite and rewrite the lock files")
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
    except (MatrixError, MirrorNotFound) as error:
        out.print(f"[red]error:[/] {error}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
