"""A real Debian repository made on the spot and served on 127.0.0.1, for the fetcher's tests.

Real .debs (dpkg-deb), real indices (apt-ftparchive), a Release signed with a throwaway gpg key, and an
HTTP server that speaks Range and can misbehave the way mirrors do: a file gone (404), a connection cut
mid-file, an index that disagrees with its Release (mid-sync), a slow answer. It records every request,
so a test can say exactly what was downloaded and how often.
"""

from __future__ import annotations

import hashlib
import lzma
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from images.debian.lock import LockedPackage
from images.debian.mirror import Mirror

SUITE = "trixie"


@dataclass
class Request:
    method: str
    path: str
    status: int
    range: str | None


@dataclass
class Faults:
    gone: set[str] = field(default_factory=set)  # URL paths answered 404
    cut: dict[str, int] = field(default_factory=dict)  # URL path -> times to cut the body mid-file
    cut_always: set[str] = field(default_factory=set)
    delay: float = 0.0  # seconds before each answer (to make two clients overlap)
    replaced: dict[str, bytes] = field(default_factory=dict)  # URL path -> other bytes of the same file


class LocalMirror:
    def __init__(self, root: Path):
        self.root = root / "mirror"
        self.gnupg = root / "gnupg"
        self.keyring = root / "keyring.gpg"
        self.root.mkdir(parents=True)
        self.gnupg.mkdir(mode=0o700)
        self.requests: list[Request] = []
        self.faults = Faults()
        self.debs: dict[tuple[str, str, str], Path] = {}  # (name, arch, version) -> file
        self._lock = threading.Lock()
        self._make_key()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    # -- the repository ------------------------------------------------------------------------------

    def _gpg(self, *args: str, stdin: bytes | None = None) -> bytes:
        return subprocess.run(["gpg", "--batch", "--homedir", str(self.gnupg), *args], input=stdin,
                              capture_output=True, check=True).stdout

    def _make_key(self) -> None:
        self._gpg("--passphrase", "", "--quick-gen-key", "bootmatrix test mirror <test@invalid>", "ed25519", "sign",
                  "never")
        self.keyring.write_bytes(self._gpg("--export"))

    def add_deb(self, name: str, version: str, arch: str, payload: bytes) -> Path:
        """Build a real .deb with dpkg-deb and put it into the pool."""
        tree = self.root.parent / "build" / f"{name}_{version}_{arch}"
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "usr/share" / name).mkdir(parents=True)
        (tree / "usr/share" / name / "payload").write_bytes(payload)
        (tree / "DEBIAN/control").write_text(
            f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: test <test@invalid>\n"
            f"Description: bootmatrix test package\n"
        )
        pool = self.root / "pool/main" / name[0] / name
        pool.mkdir(parents=True, exist_ok=True)
        deb = pool / f"{name}_{version.rsplit(':', maxsplit=1)[-1]}_{arch}.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(deb)],
                       capture_output=True, check=True)
        self.debs[(name, arch, version)] = deb
        return deb

    def locked(self, name: str, arch: str, version: str) -> LockedPackage:
        deb = self.debs[(name, arch, version)]
        data = deb.read_bytes()
        return LockedPackage(name, arch, version, hashlib.sha256(data).hexdigest(), len(data),
                             deb.relative_to(self.root).as_posix())

    def publish(self, listed: list[tuple[str, str, str]], arches: tuple[str, ...] = ("amd64", "riscv64")) -> None:
        """Write the index (Packages, Packages.xz per arch) listing only `listed` (name, arch, version),
        and a signed Release (InRelease and Release.gpg), as apt-ftparchive and gpg make them."""
        scanned = subprocess.run(["apt-ftparchive", "packages", "pool"], cwd=self.root, capture_output=True,
                                 text=True, check=True).stdout
        stanzas = [s for s in scanned.split("\n\n") if s.strip()]
        dist = self.root / "dists" / SUITE
        for arch in arches:
            keep = []
            for stanza in stanzas:
                fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
                key = (fields["Package"], fields["Architecture"], fields["Version"])
                if key in listed and key[1] in (arch, "all"):
                    keep.append(stanza.strip() + "\n")
            folder = dist / "main" / f"binary-{arch}"
            folder.mkdir(parents=True, exist_ok=True)
            text = "\n".join(keep).encode()
            (folder / "Packages").write_bytes(text)
            (folder / "Packages.xz").write_bytes(lzma.compress(text))
        release = subprocess.run(
            ["apt-ftparchive", "-o", f"APT::FTPArchive::Release::Codename={SUITE}",
             "-o", "APT::FTPArchive::Release::Suite=stable", "-o", "APT::FTPArchive::Release::Origin=Debian",
             "-o", f"APT::FTPArchive::Release::Architectures={' '.join(arches)}",
             "-o", "APT::FTPArchive::Release::Components=main", "release", "."],
            cwd=dist, capture_output=True, check=True,
        ).stdout
        (dist / "Release").write_bytes(release)
        (dist / "InRelease").write_bytes(self._gpg("--clearsign", "--output", "-", stdin=release))
        (dist / "Release.gpg").write_bytes(self._gpg("--armor", "--detach-sign", "--output", "-", stdin=release))

    def break_index(self, arch: str) -> None:
        """An index mid-sync: Packages.xz no longer matches the size and hash Release gives for it."""
        folder = self.root / "dists" / SUITE / "main" / f"binary-{arch}"
        for name in ("Packages", "Packages.xz"):
            path = folder / name
            path.write_bytes(path.read_bytes() + (b"\n" if name == "Packages" else lzma.compress(b"\n")))

    def remove(self, name: str, arch: str, version: str) -> None:
        """The pool file is really gone (404), as after the archive's clean-up."""
        self.faults.gone.add("/" + self.debs[(name, arch, version)].relative_to(self.root).as_posix())

    # -- serving -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def mirror(self) -> Mirror:
        return Mirror(self.url, self.keyring, "test mirror")

    def path_of(self, package: LockedPackage) -> str:
        return f"/{package.filename}"

    def downloads(self) -> Counter[str]:
        """How often each pool file was sent (200 or 206), by URL path."""
        with self._lock:
            return Counter(r.path for r in self.requests if r.method == "GET" and r.status in (200, 206))

    def index_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/dists/")]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = self.path.split("?")[0]
                wanted_range = self.headers.get("Range")
                if mirror.faults.delay:
                    time.sleep(mirror.faults.delay)
                file = mirror.root / path.lstrip("/")
                if path in mirror.faults.gone or not file.is_file() or ".." in path:
                    mirror._record(Request(self.command, path, 404, wanted_range))
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = mirror.faults.replaced.get(path) or file.read_bytes()
                start = 0
                if wanted_range and wanted_range.startswith("bytes="):
                    start = int(wanted_range[6:].split("-")[0])
                status = 206 if start else 200
                mirror._record(Request(self.command, path, status, wanted_range))
                self.send_response(status)
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if not body:
                    return
                cut = path in mirror.faults.cut_always or mirror.faults.cut.get(path, 0) > 0
                if cut:
                    if path in mirror.faults.cut:
                        mirror.faults.cut[path] -= 1
                    half = start + max(1, (len(data) - start) // 2)
                    self.wfile.write(data[start:half])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data[start:])

        return Handler


def run_fetch_in_subprocess(
    cache: Path, mirror_url: str, keyring: Path, lock_file: Path, set_name: str
) -> subprocess.Popen[bytes]:
    """Another process fetching a set into the same cache, as a second pytest session or xdist worker would."""
    code = (
        "import sys; from pathlib import Path; from images.debian.fetch import DebianFetcher; "
        "from images.debian.lock import Lockfile; from images.debian.mirror import Mirror; "
        f"f = DebianFetcher(Path({str(cache)!r}), Lockfile.load(Path({str(lock_file)!r})), "
        f"Mirror({mirror_url!r}, Path({str(keyring)!r}), 'test'), locked=True); "
        f"print(len(f.fetch_set({set_name!r})))"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).parent.parent)
