"""`bootmatrix import lava OUTPUT_DIR`: a LAVA job's results as bootmatrix's own.

OUTPUT_DIR holds one folder per job: `job.yaml` (the definition, whose metadata names the cell) and
`lava.log`, the job's log as LAVA records it, one record per line (`{"dt", "lvl", "msg"}`): what
lava-run writes on stderr, and what `lavacli jobs logs --raw ID` gives from a server. From it come the
results (`lvl: results`: each test step, each action, and the job itself), the console (`lvl: target`)
and the durations of the boot and of the job.

A cell passes when the job finished correctly and every result passed; the first failure is its reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

BOOT_ACTIONS = ("login-action",)  # QEMU started to the prompt (or the login answered)


class NotLavaOutput(Exception):
    """A folder that is not a LAVA job's output: one line naming it."""


@dataclass
class JobResult:
    cell: str
    passed: bool
    reason: str
    folder: Path
    console: str
    definition: dict[str, Any]  # job.yaml as read
    cases: list[dict[str, Any]] = field(default_factory=list)
    boot_seconds: float | None = None
    job_seconds: float | None = None

    @property
    def console_tail(self) -> str:
        return "\n".join(self.console.splitlines()[-20:])


def records(log: Path) -> list[dict[str, Any]]:
    """The log's records; a line that is not one is skipped (a server's log may end mid-line)."""
    found = []
    for raw in log.read_text(errors="replace").splitlines():
        line = raw.removeprefix("- ").strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            try:
                record = yaml.safe_load(line)
            except yaml.YAMLError:
                continue
        if isinstance(record, dict) and "lvl" in record:
            found.append(record)
    return found


def _seconds(value: object) -> float | None:
    try:
        return float(str(value))
    except ValueError:
        return None


def read_job(folder: Path) -> JobResult:
    """One job's folder: its cell (from the definition's metadata), results, console and durations."""
    definition, log = folder / "job.yaml", folder / "lava.log"
    if not definition.is_file() or not log.is_file():
        raise NotLavaOutput(f"{folder}: not a LAVA job's output (job.yaml and lava.log expected)")
    try:
        job = yaml.safe_load(definition.read_text())
        cell = str(job["metadata"]["bootmatrix.cell"])
    except (yaml.YAMLError, TypeError, KeyError) as error:
        raise NotLavaOutput(f"{definition}: not a bootmatrix job (metadata bootmatrix.cell: {error})") from None
    entries = records(log)
    cases = [r["msg"] for r in entries if r["lvl"] == "results" and isinstance(r["msg"], dict)]
    console = "\n".join(str(r["msg"]) for r in entries if r["lvl"] == "target")
    verdict = next((c for c in reversed(cases) if c.get("definition") == "lava" and c.get("case") == "job"), None)
    failed = [c for c in cases if c.get("result") not in ("pass", "skip")]
    if verdict is None:
        passed, reason = False, "the job has no result: it did not finish (lava.log ends before it does)"
    elif failed:
        first = failed[0]
        extra = first.get("extra")
        why = first.get("error_msg") or (extra.get("fail", "") if isinstance(extra, dict) else "")
        passed = False
        reason = f"LAVA: {first.get('definition')}/{first.get('case')} {first.get('result')}"
        reason += f": {why}" if why else ""
    else:
        passed, reason = True, ""
    boot = next((c for c in cases if c.get("definition") == "lava" and c.get("case") in BOOT_ACTIONS), None)
    times = [r["dt"] for r in entries if "dt" in r]
    job_seconds = None
    if len(times) >= 2:
        job_seconds = (datetime.fromisoformat(str(times[-1])) - datetime.fromisoformat(str(times[0]))).total_seconds()
    return JobResult(cell, passed, reason, folder, console, job, cases,
                     _seconds(boot.get("duration")) if boot else None, job_seconds)


def job_config(job: dict[str, Any]) -> str:
    """The history's configuration hash of a job: its whole definition but where the artifacts are
    served (a local run serves them on a new port each time), so runs of one job compare."""
    unserved = json.loads(json.dumps(job, default=str))
    for action in unserved.get("actions", []):
        for image in action.get("deploy", {}).get("images", {}).values():
            image.pop("url", None)
    return hashlib.sha256(json.dumps(unserved, sort_keys=True).encode()).hexdigest()[:16]


def read_output(output: Path) -> list[JobResult]:
    """Every job folder of OUTPUT_DIR, in name order."""
    if not output.is_dir():
        raise NotLavaOutput(f"{output}: no such folder")
    folders = sorted(p for p in output.iterdir() if (p / "lava.log").exists())
    if not folders:
        raise NotLavaOutput(f"{output}: no job folders in it (each holds job.yaml and lava.log)")
    return [read_job(folder) for folder in folders]
