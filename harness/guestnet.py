"""Network operations run inside a guest through its console shell.

Uses only busybox-level tools (udhcpc, ip, wget, sha256sum, httpd), so it works on the minimal images
and on any Linux guest that has them. Every failure carries the guest's own words (wget's error line,
udhcpc's output), so a test fails with the reason rather than a timeout.

Nothing here knows an image's own strings: how to get a lease is a command the image supplies
(`dhcp_command`, busybox udhcpc with its default hook unless told), and the lease is read back from the
kernel's view afterwards (`ip addr`, `ip route`, /etc/resolv.conf), not parsed from a hook's output.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from harness.console import Console, clean
from harness.deadline import Deadline
from harness.errors import MachineError


class GuestNetError(MachineError):
    """A network operation failed inside the guest; the message is what the guest said."""


DEFAULT_DHCP = "udhcpc -i {interface} -n -q -t 5 -T 2"  # busybox with its own default hook script
LEASE_READBACK = ("ip -o -4 addr show dev {interface}; echo '#'; ip -4 route show default; echo '#'; "
                  "cat /etc/resolv.conf 2>/dev/null; true")  # a root may have no resolv.conf (networkd, no resolved)


@dataclass(frozen=True)
class Lease:
    interface: str
    address: str
    prefix: int
    gateway: str  # "" when the server offered no router
    dns: str  # the first name server, "" when none was offered
    seconds: float  # host time from sending the DHCP command to its answer


def parse_lease(interface: str, readback: str, seconds: float) -> Lease | None:
    """A Lease from LEASE_READBACK's output, or None when the interface has no IPv4 address. Colour
    escapes are removed first: Debian 13's ip colours addresses on a terminal, as the console is."""
    sections = [""]
    for line in clean(readback).splitlines():
        if line.strip() == "#":
            sections.append("")
        else:
            sections[-1] += line + "\n"
    addresses, routes, resolv = [*sections, "", ""][:3]
    address = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/(\d+)", addresses)
    if address is None:
        return None
    gateway = re.search(r"^default via (\S+)", routes, re.MULTILINE)
    dns = re.search(r"^nameserver\s+(\S+)", resolv, re.MULTILINE)
    return Lease(interface, address.group(1), int(address.group(2)), gateway.group(1) if gateway else "",
                 dns.group(1) if dns else "", seconds)


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
    def __init__(self, console: Console, budget: float, dhcp_command: str = DEFAULT_DHCP):
        self.console = console
        self.budget = budget
        self.dhcp_command = dhcp_command

    def _run(self, command: str, deadline: Deadline | None) -> tuple[str, int]:
        return self.console.run(command, deadline or Deadline.after(self.budget))

    def dhcp(self, interface: str = "eth0", deadline: Deadline | None = None) -> Lease:
        started = time.monotonic()
        output, code = self._run(f"{self.dhcp_command.format(interface=interface)} 2>&1", deadline)
        elapsed = time.monotonic() - started
        if code != 0:
            raise GuestNetError(f"DHCP on {interface} failed (exit {code}): {output.strip()[-500:]}")
        readback, code = self._run(LEASE_READBACK.format(interface=interface), deadline)
        lease = parse_lease(interface, readback, elapsed)
        if code != 0 or lease is None:
            raise GuestNetError(f"DHCP on {interface} reported success but {interface} has no IPv4 address: "
                                f"{output.strip()[-300:]} / {readback.strip()[-300:]}")
        return lease

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
