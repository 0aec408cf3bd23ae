"""Direct downloads of locked pool files: parallel, retried with backoff, resumed, verified, renamed.

A valid lock needs no index: each entry names its pool path, size and sha256, so a locked package is
fetched as `<mirror>/<pool path>` over plain HTTP(S), whatever the mirror's index says today (a
superseded version stays in the pool for a while; an index mid-sync does not matter at all).

How one file is fetched:
- into `<dest>.part` beside its final place; a `.part` left by an interrupted run is resumed with a
  Range request (a server that ignores Range sends the whole file, which replaces the part);
- attempts are made by tenacity (exponential backoff) on connection errors, a body cut short, 5xx and
  429; a 404 or 410 is final at once (`Gone`), and the caller decides what a missing file means;
- the result must have the locked size and sha256; a mismatch deletes the part and is final
  (`Mismatch`): bytes that fail their hash never enter the cache;
- then `os.replace` into place, so readers see the old state or the whole verified file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import urllib3
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

log = logging.getLogger(__name__)

CHUNK = 1 << 16
ATTEMPTS = 5
BACKOFF = 1.0  # seconds before the second attempt, doubling up to 30
PARALLEL = 4
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0  # seconds without a byte: a stalled connection, retried


class DownloadError(Exception):
    """A file could not be downloaded; the message names the URL and why."""


class Gone(DownloadError):
    """The server says the file does not exist (404/410): retrying will not help."""


class Mismatch(DownloadError):
    """The bytes arrived but are not the locked ones (size or sha256): refused."""


class _Transient(Exception):
    """Worth another attempt: connection trouble, a short body, 5xx, 429."""


@dataclass(frozen=True)
class Wanted:
    url: str
    dest: Path
    size: int | None  # None: not known in advance (a user's URL); the sha256 alone decides
    sha256: str


def pool() -> urllib3.PoolManager:
    """One connection pool for the downloads of a process; urllib3's own retries are off (tenacity
    retries the whole file, resuming from what arrived)."""
    return urllib3.PoolManager(
        num_pools=4, maxsize=PARALLEL, retries=False,
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
    )


def _hash_prefix(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest


def _attempt(http: urllib3.PoolManager, wanted: Wanted, advance: Callable[[int], None]) -> None:
    part = wanted.dest.with_name(wanted.dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    # A finished or overlong part from an earlier run: judge it from scratch.
    if wanted.size is not None and have >= wanted.size:
        part.unlink()
        advance(-have)
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = http.request("GET", wanted.url, headers=headers, preload_content=False, redirect=True)
    except urllib3.exceptions.HTTPError as error:
        raise _Transient(f"{wanted.url}: {error}") from error
    try:
        if response.status in (404, 410):
            raise Gone(f"{wanted.url}: HTTP {response.status} (the mirror no longer has this file)")
        if response.status == 429 or response.status >= 500:
            raise _Transient(f"{wanted.url}: HTTP {response.status}")
        if response.status == 200:
            advance(-have)  # no part, or the server ignored Range: the whole file comes (again)
            have = 0
        elif response.status != 206:
            raise DownloadError(f"{wanted.url}: unexpected HTTP {response.status}")
        digest = _hash_prefix(part) if have else hashlib.sha256()
        with part.open("ab" if have else "wb") as out:
            try:
                for chunk in response.stream(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    have += len(chunk)
                    advance(len(chunk))
                    if wanted.size is not None and have > wanted.size:
                        response.close()
                        break
            except (urllib3.exceptions.HTTPError, OSError) as error:  # OSError: a reset socket
                lost = f"connection lost after {have} of {wanted.size or '?'} bytes"
                raise _Transient(f"{wanted.url}: {lost}: {error}") from error
    except BaseException:
        response.close()  # a connection with unread bytes must not go back to the pool
        raise
    response.release_conn()
    if wanted.size is not None and have < wanted.size:
        raise _Transient(f"{wanted.url}: body ended after {have} of {wanted.size} bytes")
    if (wanted.size is not None and have != wanted.size) or digest.hexdigest() != wanted.sha256:
        part.unlink(missing_ok=True)
        advance(-have)
        expected = f"{wanted.size} bytes with sha256" if wanted.size is not None else "sha256"
        raise Mismatch(
            f"{wanted.url}: got {have} bytes with sha256 {digest.hexdigest()}, expected {expected} "
            f"{wanted.sha256}; refusing it"
        )
    os.replace(part, wanted.dest)


def download(
    http: urllib3.PoolManager, wanted: Wanted, advance: Callable[[int], None] = lambda _: None,
    attempts: int | None = None, backoff: float | None = None,
) -> None:
    """Fetch one file to `wanted.dest`, verified; DownloadError (Gone, Mismatch) when it cannot be had."""
    wanted.dest.parent.mkdir(parents=True, exist_ok=True)
    part = wanted.dest.with_name(wanted.dest.name + ".part")
    if part.exists():
        advance(part.stat().st_size)  # resumed: what an earlier run fetched counts as done
    attempts = attempts or ATTEMPTS
    retrying = Retrying(
        retry=retry_if_exception_type(_Transient), stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=BACKOFF if backoff is None else backoff, max=30), reraise=True,
        before_sleep=lambda state: log.warning(
            "download attempt %d failed, retrying: %s", state.attempt_number,
            state.outcome.exception() if state.outcome else "?",
        ),
    )
    try:
        for attempt in retrying:
            with attempt:
                _attempt(http, wanted, advance)
    except _Transient as error:
        raise DownloadError(f"gave up after {attempts} attempts: {error}") from error


Guard = Callable[[Wanted], AbstractContextManager[bool]]


def download_all(
    http: urllib3.PoolManager, files: Iterable[Wanted], label: str, guard: Guard | None = None,
) -> dict[Path, DownloadError]:
    """Download `files` in parallel with a progress bar (plain log lines when stderr is not a terminal).

    Each download runs inside `guard(wanted)` (a per-file lock, say), whose value says whether it is
    still needed (another process may have got it first). Returns the files that failed, with why; the
    others are in place.
    """
    todo = list(files)
    failures: dict[Path, DownloadError] = {}
    if not todo:
        return failures
    total = sum(w.size or 0 for w in todo)
    interactive = sys.stderr.isatty()
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        disable=not interactive, transient=False,
    )
    log.info("%s: downloading %d package(s), %.1f MB", label, len(todo), total / 1e6)
    if not interactive:
        print(f"bootmatrix: {label}: downloading {len(todo)} package(s), {total / 1e6:.1f} MB", file=sys.stderr)

    with progress:
        task = progress.add_task(label, total=total)

        def one(wanted: Wanted) -> None:
            with guard(wanted) if guard is not None else nullcontext(True) as needed:
                if not needed:
                    progress.advance(task, wanted.size or 0)
                    return
                try:
                    download(http, wanted, lambda n: progress.advance(task, n))
                except DownloadError as error:
                    failures[wanted.dest] = error

        with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="bm-download") as workers:
            list(workers.map(one, todo))
    return failures
