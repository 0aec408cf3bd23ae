"""Run exported jobs on this machine's own lava-dispatcher (`lava-run`), as a LAVA worker would.

The artifacts are served over HTTP on the address the export named (it must be 127.0.0.1 here), each
job's device dictionary is the exported one with `command` set to the cell's QEMU (the pinned one
through a small wrapper, since it runs through its own loader), and each job's YAML log (what lava-run
writes on stderr, the same records a LAVA server keeps) goes to OUTPUT/<cell>/lava.log beside a copy
of the definition: the folder `bootmatrix import lava` reads.

lava-run must run as root (it says so and stops otherwise); so does this.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from harness.qemu import QemuInstall

LAVA_RUN = "lava-run"


class LavaUnavailable(Exception):
    """lava-run cannot run here: not installed, or not root."""


@dataclass(frozen=True)
class LocalRun:
    cell: str
    folder: Path
    exit_code: int
    seconds: float


def check_lava_run() -> str:
    found = shutil.which(LAVA_RUN)
    if found is None:
        raise LavaUnavailable("lava-run is not installed: apt-get install --no-install-recommends lava-dispatcher "
                              "(or `bootmatrix doctor --fix`)")
    if os.geteuid() != 0:
        raise LavaUnavailable("lava-run must run as root (it refuses otherwise): run this as root or under sudo")
    return found


def qemu_wrapper(qemu: QemuInstall, arch: str, folder: Path) -> Path:
    """A `qemu-system-<arch>` script for the device dictionary's `command`: the pinned QEMU runs
    through its own loader, with its data folders and module folder.

    The script runs QEMU as its child rather than exec'ing it, so the process lava-dispatcher watches
    is the shell. After its tests, LAVA sends `poweroff`, reads one chunk and closes the console with
    pexpect's close(force=True): SIGHUP, SIGCONT, SIGINT, SIGKILL, 0.1 s apart, and the job fails
    ("Could not terminate the child") if the process is not reaped 0.1 s after the SIGKILL. A QEMU
    that is still shutting down with gigabytes mapped can take longer than that on a loaded host. The
    shell ends at the first SIGHUP. The kernel then hangs QEMU up as well (it is in the foreground
    process group of the terminal whose controlling process ended), and QEMU shuts down cleanly."""
    command = [*qemu.command(arch), *qemu.data_args()]
    modules = qemu.env().get("QEMU_MODULE_DIR")
    lines = ["#!/bin/sh", *([f"export QEMU_MODULE_DIR={shlex.quote(modules)}"] if modules else []),
             f'{" ".join(shlex.quote(part) for part in command)} "$@"', "exit $?", ""]
    path = folder / f"qemu-system-{arch}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    path.chmod(0o755)
    return path


@contextmanager
def serving(folder: Path, url: str) -> Iterator[None]:
    """Serve `folder` at `url`'s host and port (127.0.0.1 only) while the block runs."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
        raise ValueError(f"--artifacts-url {url}: a local run serves the artifacts itself, on http://127.0.0.1:PORT/")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", parts.port), handler)
    except OSError as error:
        raise ValueError(f"cannot serve the artifacts at {url}: {error.strerror}") from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def run_job(export_dir: Path, job: dict[str, str], output: Path, command: Path | None, job_id: int, *,
            lava_run: str, validate: bool = False) -> LocalRun:
    """One exported job through lava-run (with `validate`, only checked: the dispatcher builds its
    pipeline and checks every URL, boots nothing); its log and definition in output/<cell>/."""
    folder = output / job["cell"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    device = yaml.safe_load((export_dir / job["device"]).read_text())
    if command is not None:
        device["actions"]["boot"]["methods"]["qemu"]["parameters"]["command"] = str(command)
    (folder / "device.yaml").write_text(yaml.safe_dump(device, sort_keys=False, width=1000))
    shutil.copyfile(export_dir / job["job"], folder / "job.yaml")
    started = time.monotonic()
    with (folder / "lava.log").open("wb") as log:
        code = subprocess.run(
            [lava_run, *(["--validate"] if validate else []), "--job-id", str(job_id),
             "--output-dir", str(folder / "tmp"), "--device", str(folder / "device.yaml"), str(folder / "job.yaml")],
            stdout=log, stderr=subprocess.STDOUT, check=False,
        ).returncode
    shutil.rmtree(folder / "tmp", ignore_errors=True)  # the downloaded copies of the artifacts
    return LocalRun(job["cell"], folder, code, time.monotonic() - started)


def run_exported(export_dir: Path, output: Path, commands: dict[str, Path], cells: list[str] | None = None, *,
                 jobs: int = 1, validate: bool = False) -> list[LocalRun]:
    """Every exported job (or those of `cells`) through lava-run, `jobs` at a time, the artifacts served
    meanwhile (validating a job fetches each URL's headers too). `commands`: the QEMU each arch's device
    runs (none: the export's `qemu-system-<arch>`)."""
    lava_run = check_lava_run()
    listing = export_dir / "export.json"
    if not listing.is_file():
        raise ValueError(f"{export_dir}: no export.json in it (write one with `bootmatrix export lava`)")
    exported = json.loads(listing.read_text())
    chosen = [j for j in exported["jobs"] if cells is None or j["cell"] in cells]
    unknown = sorted(set(cells or []) - {j["cell"] for j in chosen})
    if unknown:
        raise ValueError(f"not in the export: {', '.join(unknown)}")
    output.mkdir(parents=True, exist_ok=True)
    with serving(export_dir / "artifacts", exported["artifacts_url"]), ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(run_job, export_dir, job, output, commands.get(job["arch"]), index + 1,
                               lava_run=lava_run, validate=validate)
                   for index, job in enumerate(chosen)]
        return [future.result() for future in futures]
