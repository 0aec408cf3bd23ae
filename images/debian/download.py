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
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import urllib3
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from harness.paths import CannotWrite, writing

log = logging.getLogger(__name__)

CHUNK = 1 << 16
ATTEMPTS = 5
BACKOFF = 1.0  # seconds before the second attempt, doubling up to 30
PARALLEL = 4
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0  # seconds without a byte: a stalled connection, retried
MAX_REDIRECTS = 5  # a release or CDN URL redirects once or twice
SCHEMES = ("http", "https")
# A user's URL whose size is not given may send at most this much: an endless body must not fill the disk.
UNSIZED_LIMIT = 16 * 1024**3


class DownloadError(Exception):
    """A file could not be downloaded; the message names the URL and why."""


class Gone(DownloadError):
    """The server says the file does not exist (404/410): retrying will not help."""


class Mismatch(DownloadError):
    """The bytes arrived but are not the locked ones (size or sha256): refused."""


class Stopped(DownloadError):
    """The download was stopped (Ctrl-C in the process): nothing of it is kept but its `.part`."""


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


def check_scheme(url: str) -> None:
    """Only http and https are fetched: a `file:` or `ftp:` URL is refused at once, not retried."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise DownloadError(f"{url}: only http:// and https:// URLs are fetched (not {scheme or 'a bare path'}:)")


def _get(http: urllib3.PoolManager, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
    """GET `url`, following up to MAX_REDIRECTS redirects that stay within http(s)."""
    for _ in range(MAX_REDIRECTS + 1):
        check_scheme(url)
        try:
            response = http.request("GET", url, headers=headers, preload_content=False, redirect=False)
        except urllib3.exceptions.HTTPError as error:
            raise _Transient(f"{url}: {error}") from error
        location = response.headers.get("Location")
        if response.status not in (301, 302, 303, 307, 308) or not location:
            return response
        response.drain_conn()
        response.release_conn()
        url = urllib.parse.urljoin(url, location)
    raise DownloadError(f"{url}: more than {MAX_REDIRECTS} redirects")


class _Active:
    """The responses being read now, so a stop can cut them at once (a read may wait READ_TIMEOUT)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._responses: set[urllib3.BaseHTTPResponse] = set()

    def add(self, response: urllib3.BaseHTTPResponse) -> None:
        with self._lock:
            self._responses.add(response)

    def discard(self, response: urllib3.BaseHTTPResponse) -> None:
        with self._lock:
            self._responses.discard(response)

    def cut(self) -> None:
        self.stop.set()
        with self._lock:
            responses = list(self._responses)
        for response in responses:
            response.shutdown()  # urllib3 2.3+ (pyproject): unblocks a read in another thread


_NOT_STOPPED = _Active()


def _attempt(http: urllib3.PoolManager, wanted: Wanted, advance: Callable[[int], None],
             active: _Active = _NOT_STOPPED) -> None:
    part = wanted.dest.with_name(wanted.dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    # A finished or overlong part from an earlier run: judge it from scratch.
    if wanted.size is not None and have >= wanted.size:
        part.unlink()
        advance(-have)
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    limit = wanted.size if wanted.size is not None else UNSIZED_LIMIT
    response = _get(http, wanted.url, headers)
    active.add(response)
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
        with writing(f"downloading {wanted.url}", part.parent), part.open("ab" if have else "wb") as out:
            chunks = response.stream(CHUNK)
            while True:
                try:
                    chunk = next(chunks, b"")
                except (urllib3.exceptions.HTTPError, OSError) as error:  # OSError: a reset socket
                    if active.stop.is_set():
                        raise Stopped(f"{wanted.url}: stopped") from None
                    lost = f"connection lost after {have} of {wanted.size or '?'} bytes"
                    raise _Transient(f"{wanted.url}: {lost}: {error}") from error
                if active.stop.is_set():
                    raise Stopped(f"{wanted.url}: stopped")
                if not chunk:
                    break
                out.write(chunk)  # a full disk is CannotWrite (writing above): not the mirror's fault
                digest.update(chunk)
                have += len(chunk)
                advance(len(chunk))
                if have > limit:
                    break
    except BaseException as error:
        response.close()  # a connection with unread bytes must not go back to the pool
        if isinstance(error, CannotWrite):
            part.unlink(missing_ok=True)  # nothing half-written is kept
        raise
    finally:
        active.discard(response)
    response.release_conn()
    if wanted.size is None and have > limit:
        part.unlink(missing_ok=True)
        advance(-have)
        raise Mismatch(f"{wanted.url}: sent more than {limit} bytes and no end; refusing it (give the artifact's "
                       "size to allow a bigger file)")
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
    attempts: int | None = None, backoff: float | None = None, *, active: _Active = _NOT_STOPPED,
) -> None:
    """Fetch one file to `wanted.dest`, verified; DownloadError (Gone, Mismatch) when it cannot be had.
    A `.part` left by an earlier run is resumed; when the result then fails its hash, the part was to
    blame as likely as the mirror, so the file is fetched once more from its first byte before it is
    refused."""
    check_scheme(wanted.url)
    with writing(f"downloading {wanted.url}", wanted.dest.parent):
        wanted.dest.parent.mkdir(parents=True, exist_ok=True)
    part = wanted.dest.with_name(wanted.dest.name + ".part")
    if part.exists():
        advance(part.stat().st_size)  # resumed: what an earlier run fetched counts as done
        try:
            _download(http, wanted, advance, attempts, backoff, active=active)
            return
        except Mismatch as error:
            log.warning("a resumed download failed its hash; fetching it again from the start: %s", error)
    _download(http, wanted, advance, attempts, backoff, active=active)


def _download(http: urllib3.PoolManager, wanted: Wanted, advance: Callable[[int], None], attempts: int | None,
              backoff: float | None, *, active: _Active) -> None:
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
                _attempt(http, wanted, advance, active)
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
                    download(http, wanted, lambda n: progress.advance(task, n), active=active)
                except Stopped:
                    return
                except DownloadError as error:
                    failures[wanted.dest] = error

        # Not `with`: its exit would wait for every thread, and a first Ctrl-C must stop the downloads
        # now (the reads in progress are cut; their .part files stay, to be resumed).
        active = _Active()
        workers = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="bm-download")
        try:
            list(workers.map(one, todo))
        except BaseException:
            active.cut()
            workers.shutdown(wait=False, cancel_futures=True)
            raise
        workers.shutdown()
    return failures
