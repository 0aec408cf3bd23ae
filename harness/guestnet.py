"""Network operations run inside a guest through its console shell.

Uses only busybox-level tools (udhcpc, ip, wget, sha256sum, httpd), so it works on the minimal images
and on any Linux guest that has them. Every failure carries the guest's own words (wget's error line,
udhcpc's output), so a test fails with the reason rather than a timeout.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from harness.console import Console
from harness.deadline import Deadline
from harness.errors import MachineError


class GuestNetError(MachineError):
    """A network operation failed inside the guest; the message is what the guest said."""


@dataclass(frozen=True)
class Lease:
    interface: str
    address: str
    prefix: int
    gateway: str
    dns: str
    lease_seconds: int
    seconds: float  # host time from sending udhcpc to its answer


@dataclass(frozen=True)
class Fetched:
    url: str
    sha256: str
    size: int
    seconds: float  # host time around the download command (includes one shell round trip)

    @property
    def megabytes_per_second(self) -> float:
        return self.size / 1e6 / self.seconds if self.seconds > 0 else 0.0


class GuestNet:
    def __init__(self, console: Console, budget: float, dhcp_script: str = "/etc/udhcpc.script"):
        self.console = console
        self.budget = budget
        self.dhcp_script = dhcp_script

    def _run(self, command: str, deadline: Deadline | None) -> tuple[str, int]:
        return self.console.run(command, deadline or Deadline.after(self.budget))

    def dhcp(self, interface: str = "eth0", deadline: Deadline | None = None) -> Lease:
        started = time.monotonic()
        output, code = self._run(
            f"udhcpc -i {interface} -n -q -t 5 -T 2 -s {self.dhcp_script} 2>&1", deadline
        )
        elapsed = time.monotonic() - started
        found = re.search(
            r"BOOTMATRIX-LEASE interface=(\S+) ip=(\S+) mask=(\d+) router=(\S*) dns=(\S*) lease=(\d*)", output
        )
        if code != 0 or not found:
            raise GuestNetError(f"DHCP on {interface} failed (exit {code}): {output.strip()[-500:]}")
        name, address, prefix, gateway, dns, lease = found.groups()
        return Lease(name, address, int(prefix), gateway, dns, int(lease or 0), elapsed)

    def set_address(self, address: str, prefix: int, interface: str = "eth0") -> None:
        output, code = self._run(
            f"ip link set {interface} up && ip addr add {address}/{prefix} dev {interface}", None
        )
        if code != 0:
            raise GuestNetError(f"could not set {address}/{prefix} on {interface}: {output}")

    def fetch(self, url: str, deadline: Deadline | None = None, keep_as: str = "/tmp/fetched") -> Fetched:
        """Download `url` in the guest; return its sha256 and size as the guest computed them."""
        started = time.monotonic()
        output, code = self._run(f"wget -q -O {keep_as} '{url}' 2>&1", deadline)
        elapsed = time.monotonic() - started
        if code != 0:
            raise GuestNetError(f"guest could not fetch {url} (wget exit {code}): {output.strip()[-500:]}")
        digest, code = self._run(f"sha256sum {keep_as} | cut -d' ' -f1; wc -c < {keep_as}", deadline)
        lines = digest.split()
        if code != 0 or len(lines) != 2:
            raise GuestNetError(f"could not hash {keep_as}: {digest}")
        return Fetched(url, lines[0], int(lines[1]), elapsed)

    def make_file(self, path: str, size_bytes: int) -> str:
        """A file of random bytes in the guest; returns its sha256."""
        output, code = self._run(
            f"mkdir -p $(dirname {path}) && head -c {size_bytes} /dev/urandom > {path} && "
            f"sha256sum {path} | cut -d' ' -f1", None
        )
        if code != 0:
            raise GuestNetError(f"could not make {path}: {output}")
        return output.strip()

    def serve(self, directory: str = "/srv", port: int = 80) -> None:
        """Start busybox httpd serving `directory` on `port` (it daemonizes)."""
        output, code = self._run(f"mkdir -p {directory} && httpd -p {port} -h {directory}", None)
        if code != 0:
            raise GuestNetError(f"httpd would not start on port {port}: {output}")
