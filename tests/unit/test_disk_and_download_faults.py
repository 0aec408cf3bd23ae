"""Faults of the host and of servers: a full or read-only disk under a build, a download or a run;
redirects, other schemes, endless bodies, a damaged .part, Ctrl-C during downloads. Real HTTP on
127.0.0.1; the small disks are real tmpfs mounts in a private mount namespace; the signal is real."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import images.debian.download as download_module
from harness.paths import NoSpace
from harness.payload_server import PayloadServer
from images.debian.download import DownloadError, Mismatch, Wanted, download, pool
from tests.unit.test_fetch import fetcher, mirror  # noqa: F401 - the fixture

REPO = Path(__file__).parents[2]


@pytest.fixture
def server() -> Iterator[PayloadServer]:
    with PayloadServer() as served:
        yield served


def test_redirects_within_http_are_followed(server: PayloadServer, tmp_path: Path) -> None:
    digest = server.add_payload("release.iso", 100_000)
    server.redirects["/download/latest"] = "/download/v2"
    server.redirects["/download/v2"] = server.url("/payload/release.iso", for_guest=False)
    target = tmp_path / "release.iso"
    download(pool(), Wanted(server.url("/download/latest", for_guest=False), target, None, digest))
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    assert [r.status for r in server.requests] == [302, 302, 200]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x"])
def test_other_schemes_are_refused_at_once(server: PayloadServer, tmp_path: Path, url: str) -> None:
    with pytest.raises(DownloadError, match="only http:// and https:// URLs are fetched"):
        download(pool(), Wanted(url, tmp_path / "x", None, "0" * 64))
    server.redirects["/away"] = url
    started = time.monotonic()
    with pytest.raises(DownloadError, match="only http:// and https:// URLs are fetched"):
        download(pool(), Wanted(server.url("/away", for_guest=False), tmp_path / "x", None, "0" * 64))
    assert time.monotonic() - started < 5, "refused, not retried with backoff"
    assert len(server.requests) == 1


def test_a_matrix_url_of_another_scheme_names_the_key(tmp_path: Path) -> None:
    from matrix.model import MatrixError, load_matrix
    from tests.unit.test_matrix import write

    path = write(tmp_path, '[[cell]]\narch = "x86_64"\nfirmware = "seabios"\n'
                           f'kernel = {{ url = "file:///etc/passwd", sha256 = "{"0" * 64}" }}\n')
    with pytest.raises(MatrixError, match=r"cell\[0\]\.kernel: .*only http:// and https://"):
        load_matrix(path)


def test_an_endless_body_stops_at_the_cap_and_keeps_nothing(
    server: PayloadServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download_module, "UNSIZED_LIMIT", 1_000_000)
    target = tmp_path / "endless.img"
    with pytest.raises(Mismatch, match="sent more than 1000000 bytes"):
        download(pool(), Wanted(server.url("/endless", for_guest=False), target, None, "0" * 64))
    assert list(tmp_path.iterdir()) == []
    sized = tmp_path / "sized.img"
    with pytest.raises(Mismatch):  # with a size, the download stops there
        download(pool(), Wanted(server.url("/endless", for_guest=False), sized, 5000, "0" * 64))
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_part_is_fetched_again_from_the_start(mirror, tmp_path: Path) -> None:  # noqa: F811
    """A `.part` of a killed run whose bytes are wrong: resumed with a Range request, the whole fails its
    hash; the file is then fetched from byte 0 once, and the run does not blame the mirror."""
    instance = fetcher(mirror, tmp_path)
    package = instance.lock.packages("hello-riscv64")[0]
    part = instance.path(package).with_name(instance.path(package).name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(b"garbage"[: package.size // 2] * 1)
    ((_, path),) = instance.fetch_set("hello-riscv64")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == package.sha256
    attempts = [r.status for r in mirror.requests if r.path == mirror.path_of(package)]
    assert attempts == [206, 200]


def test_a_lock_with_an_edited_sha256_keeps_the_good_cached_file(mirror, tmp_path: Path) -> None:  # noqa: F811
    """The lock is wrong, not the cached .deb (which a shared debs/ folder may hold for another user):
    the refused download deletes nothing."""
    from images.debian.fetch import FetchError

    ((package, path),) = fetcher(mirror, tmp_path).fetch_set("hello-riscv64")
    good = path.read_bytes()
    instance = fetcher(mirror, tmp_path)
    edited = instance.lock.sets["hello-riscv64"][0].__class__(**{**vars(package), "sha256": "f" * 64})
    instance.lock.sets["hello-riscv64"] = [edited]
    with pytest.raises(FetchError, match="refusing it"):
        instance.fetch_set("hello-riscv64")
    assert path.read_bytes() == good


# A child's first line: Ctrl-C as from a terminal. A pytest-xdist worker ignores SIGINT, an ignored
# signal stays ignored across exec, and Python then never raises KeyboardInterrupt.
INTERRUPTIBLE = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"


SCRIPT = INTERRUPTIBLE + """
import sys
from pathlib import Path
from images.debian.download import Wanted, download_all, pool
url, dest = sys.argv[1], Path(sys.argv[2])
files = [Wanted(f"{url}{n}", dest / f"f{n}", {size}, "0" * 64) for n in range(4)]
try:
    failures = download_all(pool(), files, "test")
except Exception as error:
    print(f"{type(error).__name__}: {error}", flush=True)
    sys.exit(3)
print("failures", len(failures), flush=True)
"""


def test_the_first_ctrl_c_stops_the_downloads_at_once(server: PayloadServer, tmp_path: Path) -> None:
    for n in range(4):
        server.payloads[f"p{n}"] = b"x" * 2_000_000  # 25 s each at the slow rate
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.replace("{size}", "2_000_000"))
    process = subprocess.Popen([sys.executable, str(script), server.url("/slow/p", for_guest=False), str(tmp_path)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(server.requests) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        process.wait(timeout=30)
    finally:
        process.kill()
    assert time.monotonic() - sent < 3, "one Ctrl-C ends the process; its downloads do not hold it"
    assert process.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("f")) == [f"f{n}.part" for n in range(4)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 1 MiB tmpfs, mounted in a private mount namespace by the test's own child (unshare -m)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare(1) and root for a private mount namespace with a small tmpfs")
    return tmp_path / "small"


def run_on_small_disk(folder: Path, script: str, *args: str,
                      options: str = "size=1m") -> subprocess.CompletedProcess[str]:
    """`script` in a child whose private mount namespace has a tmpfs with `options` at `folder`."""
    folder.mkdir()
    command = [sys.executable, "-c", textwrap.dedent(script), *args]
    mount = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)]
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           f'{" ".join(mount)} && exec "$@"', "sh", *command],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_a_full_disk_during_a_download_says_so_at_once_and_keeps_no_part(
    server: PayloadServer, small_disk: Path
) -> None:
    digest = server.add_payload("big.deb", 4_000_000)
    done = run_on_small_disk(small_disk, """
        import sys, time
        from pathlib import Path
        from images.debian.download import Wanted, download, pool
        started = time.monotonic()
        try:
            download(pool(), Wanted(sys.argv[1], Path(sys.argv[2]) / "big.deb", 4_000_000, sys.argv[3]))
        except Exception as error:
            left = list(Path(sys.argv[2]).iterdir())
            print(f"{type(error).__name__}|{error}|{time.monotonic() - started:.1f}|{left}")
        """, server.url("/payload/big.deb", for_guest=False), str(small_disk), digest)
    kind, message, seconds, left = done.stdout.strip().split("|")
    assert (kind, left) == ("NoSpace", "[]"), done.stdout + done.stderr
    assert "no space left" in message and str(small_disk) in message
    assert float(seconds) < 5, "not retried as if the mirror had cut the connection"
    assert len(server.requests) == 1
    assert issubclass(NoSpace, Exception)


def test_a_full_disk_during_a_build_is_one_line_and_leaves_no_entry(small_disk: Path) -> None:
    done = run_on_small_disk(small_disk, """
        import sys
        from pathlib import Path
        from harness.paths import CannotWrite
        from images.store import Store
        store = Store(Path(sys.argv[1]) / "cache")
        try:
            store.get("big", {}, lambda content: (content / "f").write_bytes(b"x" * 4_000_000))
        except CannotWrite as error:
            print(type(error).__name__, "|", error)
        print(sorted(p.name for p in (store.root / "entries").iterdir()), sorted((store.root / "tmp").iterdir()))
        """, str(small_disk))
    first, second = done.stdout.strip().splitlines()
    assert first == f"NoSpace | building big: cannot write {small_disk}/cache: no space left on its file system", (
        done.stdout + done.stderr)
    assert second == "[] []"


def test_read_only_results_are_one_line_exit_2(small_disk: Path) -> None:
    done = run_on_small_disk(small_disk, """
        import sys
        from matrix.cli import main
        sys.exit(main(["run", "--results", sys.argv[1] + "/results", "--no-history"]))
        """, str(small_disk), options="size=1m,ro")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.strip() == f"error: --results: cannot write {small_disk}/results: its file system is read-only"


def test_a_history_on_a_read_only_file_system_is_one_line_exit_2(small_disk: Path) -> None:
    done = run_on_small_disk(small_disk, """
        import sys
        from matrix.cli import main
        sys.exit(main(["run", "--history", sys.argv[1] + "/history.sqlite", "--results", "/tmp/unused-results"]))
        """, str(small_disk), options="size=1m,ro")
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"error: history: cannot write {small_disk}/history.sqlite"), line
    assert "\n" not in line
