"""Metric history in SQLite: every run's metrics (boot phases, network throughput, later compile
latencies), keyed by cell, host fingerprint, QEMU version, firmware set and accelerator, so trends can be
plotted and gates can compare a run with the median of the runs before it on the same kind of host.

Like with like: every row carries its source (pytest, run, bench) and `config`, a hash of the whole
configuration it measured (every cell field, the machine as started: memory, vCPUs, kernel command
line, NICs, firmware and image files by store key; QEMU build; firmware and package versions; whether
it was booted). Baselines and gates use only rows of the same source and configuration, so a boot
under xdist load with extra NICs never becomes the baseline of `bootmatrix run`.

Like with like: every row carries its source (pytest, run, bench) and `config`, a hash of the whole
configuration it measured (every cell field, the machine as started: memory, vCPUs, kernel command
line, NICs, firmware and image files by store key; QEMU build; firmware and package versions; whether
it was booted). Baselines and gates use only rows of the same source and configuration, so a boot
under xdist load with extra NICs never becomes the baseline of `bootmatrix run`.

One file, written by many processes at once (xdist workers, parallel sessions): WAL mode and a busy
timeout make that safe. Default path: the user data dir (platformdirs), BOOTMATRIX_HISTORY overrides.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import sqlite3
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from filelock import FileLock

from harness.hostinfo import host_facts
from harness.paths import CannotWrite, writing

log = logging.getLogger(__name__)

HISTORY_ENV = "BOOTMATRIX_HISTORY"

SCHEMA = """
CREATE TABLE IF NOT EXISTS metrics (
    run TEXT NOT NULL,          -- one id per pytest session (shared by its xdist workers) or CLI run
    recorded REAL NOT NULL,     -- unix time
    source TEXT NOT NULL,       -- pytest | run | compare
    test TEXT NOT NULL,         -- test node id or '' for the CLI
    cell TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    host TEXT NOT NULL,
    qemu_version TEXT NOT NULL,
    firmware_set TEXT NOT NULL,
    accel TEXT NOT NULL,
    config TEXT NOT NULL DEFAULT ''  -- configuration_hash() of what was measured ('' in old rows)
);
CREATE INDEX IF NOT EXISTS metrics_key ON metrics (cell, metric, host, recorded);
"""
STORE_PATH = re.compile(r"^.*/entries/([0-9a-f]{64})/content/")


def _canonical(value: Any, workdir: Path | None) -> Any:
    """A JSON-able form of a spec value that is the same for the same configuration in any run: store
    paths by key, paths in the VM's own work folder by name, socket file descriptors left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _canonical(getattr(value, f.name), workdir) for f in dataclasses.fields(value)}
        fields.pop("fd", None)
        return {"type": type(value).__name__, **fields}
    if isinstance(value, Path):
        if workdir is not None and value.is_relative_to(workdir):
            return f"workdir:{value.relative_to(workdir)}"
        return STORE_PATH.sub(lambda m: f"store:{m.group(1)}/", str(value))
    if isinstance(value, list | tuple):
        return [_canonical(v, workdir) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v, workdir) for k, v in sorted(value.items())}
    return value


def configuration_hash(parts: Mapping[str, Any], workdir: Path | None = None) -> str:
    """sha256 (16 hex digits) of everything that makes two measurements comparable."""
    canonical = json.dumps(_canonical(dict(parts), workdir), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def default_history_path() -> Path:
    override = os.environ.get(HISTORY_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir("bootmatrix")) / "history.sqlite"


def host_fingerprint() -> str:
    """What makes timings comparable: CPU model, core count, memory, kernel. Not the host name."""
    return hashlib.sha256("|".join(host_facts()).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Metric:
    cell: str
    metric: str
    value: float
    unit: str
    qemu_version: str
    firmware_set: str
    accel: str
    test: str = ""
    config: str = ""  # configuration_hash() of what was measured


@dataclass(frozen=True)
class Row:
    run: str
    recorded: float
    source: str
    test: str
    cell: str
    metric: str
    value: float
    unit: str
    host: str
    qemu_version: str
    firmware_set: str
    accel: str
    config: str


class HistoryError(Exception):
    """A history file the user named cannot be used (damaged, not a database)."""


class History:
    def __init__(self, path: Path | None = None):
        """`path` None: the default history, which is set aside (renamed, never deleted) and started
        again when it is damaged, with a warning, so a corrupt file blocks no run. A history the user
        named that is damaged or cannot be written is HistoryError, one line naming it."""
        self.path = path or default_history_path()
        self.host = host_fingerprint()
        try:
            self._set_up()
        except sqlite3.DatabaseError as error:
            if path is not None:
                raise HistoryError(f"history {self.path}: not a usable metric history ({error})") from None
            aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(self.path, aside)
            log.warning("the metric history %s was damaged (%s): moved it to %s and started a new one",
                        self.path, error, aside)
            self._set_up()

    def _set_up(self) -> None:
        with writing("history", self.path):
            if self.path.is_dir():
                raise CannotWrite("history", self.path, "it is a folder, not a file")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One process sets the file up (WAL mode, schema, migration) while the others wait: switching
            # the journal mode is refused at once, not retried, while another connection is using the file.
            with FileLock(str(self.path) + ".lock", timeout=120):
                db = sqlite3.connect(self.path, timeout=60)
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    with db:
                        db.executescript(SCHEMA)
                        columns = {row[1] for row in db.execute("PRAGMA table_info(metrics)")}
                        if "config" not in columns:  # a history from before configurations were recorded
                            db.execute("ALTER TABLE metrics ADD COLUMN config TEXT NOT NULL DEFAULT ''")
                except sqlite3.OperationalError as error:  # read-only file or folder, not a database issue
                    if "readonly" in str(error) or "unable to open" in str(error):
                        raise CannotWrite("history", self.path, str(error)) from None
                    raise
                finally:
                    db.close()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60)  # WAL is a property of the file, set once above
        try:
            with db:
                yield db
        finally:
            db.close()

    def record(self, run: str, source: str, metrics: list[Metric]) -> None:
        now = time.time()
        with self._connect() as db:
            db.executemany(
                "INSERT INTO metrics (run, recorded, source, test, cell, metric, value, unit, host, qemu_version, "
                "firmware_set, accel, config) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(run, now, source, m.test, m.cell, m.metric, m.value, m.unit, self.host, m.qemu_version,
                  m.firmware_set, m.accel, m.config) for m in metrics],
            )

    def rows(self, cell: str | None = None, metric: str | None = None, host: str | None = None) -> list[Row]:
        query = ("SELECT run, recorded, source, test, cell, metric, value, unit, host, qemu_version, firmware_set, "
                 "accel, config FROM metrics WHERE 1=1")
        args: list[str] = []
        for column, value in (("cell", cell), ("metric", metric), ("host", host)):
            if value is not None:
                query += f" AND {column} = ?"
                args.append(value)
        with self._connect() as db:
            return [Row(*r) for r in db.execute(query + " ORDER BY recorded, rowid", args)]

    def baseline(
        self, cell: str, metric: str, accel: str, exclude_run: str, *, config: str, source: str, last: int = 5
    ) -> tuple[float, int] | None:
        """(median, number of runs) of the last `last` runs' values on this host, other than `exclude_run`,
        of the same configuration and source only.

        One value per run (its median), so a run that booted a cell ten times does not outvote the others.
        """
        per_run: dict[str, list[float]] = {}
        for row in self.rows(cell, metric, self.host):
            if row.run != exclude_run and row.accel == accel and row.config == config and row.source == source:
                per_run.setdefault(row.run, []).append(row.value)
        recent = list(per_run.values())[-last:]
        if not recent:
            return None
        return statistics.median(statistics.median(values) for values in recent), len(recent)


@dataclass(frozen=True)
class Gate:
    metric: str
    tolerance: float = 0.5  # relative
    slack: float = 0.5  # absolute, in the metric's unit
    min_runs: int = 3


def check_gate(
    history: History, gate: Gate, cell: str, value: float, *, accel: str, run: str, config: str, source: str
) -> str | None:
    """A breach in words (cell, metric, value, baseline), or None. Only rows of the same configuration
    and source count."""
    found = history.baseline(cell, gate.metric, accel, exclude_run=run, config=config, source=source)
    if found is None or found[1] < gate.min_runs:
        return None
    baseline, runs = found
    limit = baseline * (1 + gate.tolerance) + gate.slack
    if value > limit:
        return (f"gate breach: {cell} {gate.metric} = {value:.3f}, baseline {baseline:.3f} (median of {runs} runs "
                f"of this configuration on this host), limit {limit:.3f} "
                f"(+{gate.tolerance * 100:.0f} % + {gate.slack})")
    return None
