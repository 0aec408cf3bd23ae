"""Guest NICs and what QEMU needs for them. No fixed ports anywhere, so parallel VMs never collide:

- `UserNet`: QEMU user-mode networking (slirp). `restrict=True` unless a test needs the guest to reach
  the host (10.0.2.2 is the host's loopback). Port forwards bind 127.0.0.1 only, on port 0: QEMU lets
  the kernel pick a free port, and `forwarded_ports()` reads the real ones back from `info usernet`.
- `DgramLink`: one end of an AF_UNIX datagram socketpair; two VMs given the two ends share a virtual
  Ethernet wire, with no port, path or host interface involved.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Forward:
    guest_port: int
    protocol: str = "tcp"


@dataclass(frozen=True)
class UserNet:
    restrict: bool = True
    forwards: tuple[Forward, ...] = ()
    model: str = "virtio-net-pci"
    mac: str | None = None
    # The guest-side network (QEMU's default 10.0.2.0/24). Two user NICs of one VM need different ones,
    # or the guest has one subnet on two links and answers through the wrong one.
    network: str | None = None

    def args(self, index: int) -> list[str]:
        options = [f"user,id=net{index}", f"restrict={'on' if self.restrict else 'off'}"]
        options += [f"net={self.network}"] if self.network else []
        options += [f"hostfwd={f.protocol}:127.0.0.1:0-:{f.guest_port}" for f in self.forwards]
        return ["-netdev", ",".join(options), "-device", _device(self.model, index, self.mac)]

    def fds(self) -> tuple[int, ...]:
        return ()


@dataclass(frozen=True)
class DgramLink:
    fd: int  # this VM's end of link_pair()
    model: str = "virtio-net-pci"
    mac: str | None = None

    def args(self, index: int) -> list[str]:
        netdev = f"dgram,id=net{index},local.type=fd,local.str={self.fd}"
        return ["-netdev", netdev, "-device", _device(self.model, index, self.mac)]

    def fds(self) -> tuple[int, ...]:
        return (self.fd,)


Nic = UserNet | DgramLink


def _device(model: str, index: int, mac: str | None) -> str:
    return f"{model},netdev=net{index}" + (f",mac={mac}" if mac else "")


def link_pair() -> tuple[socket.socket, socket.socket]:
    """The two ends of a VM-to-VM wire. Keep both open until both VMs have started."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)


def nic_args(nics: tuple[Nic, ...]) -> list[str]:
    if not nics:
        return ["-nic", "none"]
    args: list[str] = []
    for index, nic in enumerate(nics):
        args += nic.args(index)
    return args


FORWARD_LINE = re.compile(r"(TCP|UDP)\[HOST_FORWARD\]\s+\d+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)")


def parse_usernet(text: str) -> dict[tuple[str, int], int]:
    """{(protocol, guest port): host port} from HMP `info usernet`."""
    found = {}
    for protocol, _host, host_port, _guest, guest_port in FORWARD_LINE.findall(text):
        found[(protocol.lower(), int(guest_port))] = int(host_port)
    return found
