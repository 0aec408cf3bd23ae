"""A host-side HTTP server for network tests, on 127.0.0.1 and a port the kernel picks.

It serves generated payloads whose sha256 is known in advance (cut short once, on request), answers
/status/<code> with that status, drops the connection on /drop, redirects what `redirects` names, sends
a body without end on /endless and a payload slowly on /slow/<name>, and records every request
(including what guests POST), so a test can assert both what the guest received and what it sent. A
guest on QEMU user networking (restrict=off) reaches it at 10.0.2.2:<port>.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

GUEST_VIEW_OF_HOST = "10.0.2.2"  # QEMU user networking's address for the host's loopback


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int
    sent_bytes: int  # the body's length as the server answered it (recorded just before it is sent)
    body: bytes


class PayloadServer:
    def __init__(self) -> None:
        self.payloads: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}  # path -> Location, answered with 302
        # payload name -> bytes: the next GET of it sends that many bytes of the body and drops the
        # connection (a download interrupted midway), once; later GETs are whole.
        self.cut_short: dict[str, int] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _record(self, status: int, sent: int, body: bytes = b"") -> None:
                # Recorded before the answer goes out: a client that has its answer finds the request
                # in `requests` (recorded after, a test could look before the server thread got there;
                # seen once in a fresh clone's make test). `sent` is the body's length as answered.
                with server._lock:
                    server.requests.append(Request(self.command, self.path, status, sent, body))

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/drop":
                    self._record(0, 0)
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if path in server.redirects:
                    self._record(302, 0)
                    self.send_response(302)
                    self.send_header("Location", server.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path == "/endless":  # a body with no length and no end, until the client hangs up
                    self._record(200, 0)
                    self.send_response(200)
                    self.end_headers()
                    with contextlib.suppress(OSError):
                        while True:
                            self.wfile.write(b"\0" * 65536)
                    return
                if path.startswith("/slow/"):  # a payload at about 80 kB/s: a download that takes a while
                    slow = server.payloads.get(path.removeprefix("/slow/"), b"")
                    self._record(200, len(slow))
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(slow)))
                    self.end_headers()
                    with contextlib.suppress(OSError):
                        for start in range(0, len(slow), 8192):
                            self.wfile.write(slow[start:start + 8192])
                            time.sleep(0.1)
                    return
                if path.startswith("/status/"):
                    code = int(path.removeprefix("/status/"))
                    self._record(code, 0)
                    self.send_response(code)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.payloads.get(path.removeprefix("/payload/")) if path.startswith("/payload/") else None
                if data is None:
                    self._record(404, 0)
                    self.send_error(404)
                    return
                with server._lock:
                    cut = server.cut_short.pop(path.removeprefix("/payload/"), None)
                self._record(200, len(data) if cut is None else cut)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data if cut is None else data[:cut])
                if cut is not None:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                self._record(204, 0, body)
                self.send_response(204)
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="payload-server", daemon=True)
        self._thread.start()

    def add_payload(self, name: str, size: int, seed: int = 0) -> str:
        """Register `size` pseudo-random bytes under /payload/<name>; returns their sha256."""
        data = random.Random(seed).randbytes(size)
        self.payloads[name] = data
        return hashlib.sha256(data).hexdigest()

    def url(self, path: str, for_guest: bool = True) -> str:
        host = GUEST_VIEW_OF_HOST if for_guest else "127.0.0.1"
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> PayloadServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
