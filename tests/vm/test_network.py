"""Networking on every arch: DHCP, guest<->host transfers through user networking, port forwards read
back from QEMU, a VM-to-VM wire, and network failures that fail with their reason.

Throughput and lease times are recorded as pytest user properties (they land in the JUnit XML), never
asserted: performance belongs in bench/net_throughput.py.
"""

from __future__ import annotations

import hashlib
import time
import urllib.request

import pytest

from harness.guestnet import GuestNetError
from harness.net import DgramLink, Forward, UserNet, link_pair
from harness.payload_server import PayloadServer
from matrix.firmware import DIRECT_FIRMWARE

EIGHT_MIB = 8 * 1024 * 1024
pytestmark = pytest.mark.bootmatrix_cells(media="direct", firmware=list(DIRECT_FIRMWARE.values()))


def test_dhcp_lease_from_user_networking(vm, record_property) -> None:
    guest = vm(nics=(UserNet(restrict=False),))
    lease = guest.net.dhcp()
    assert (lease.interface, lease.address, lease.prefix) == ("eth0", "10.0.2.15", 24)
    assert (lease.gateway, lease.dns) == ("10.0.2.2", "10.0.2.3")
    record_property("dhcp_seconds", round(lease.seconds, 3))
    guest.metric("dhcp_s", lease.seconds, "s")
    output, code = guest.run("ip -4 addr show eth0; ip route")
    assert code == 0 and "10.0.2.15/24" in output and "default via 10.0.2.2" in output


def test_restricted_dhcp_offers_no_route_out(vm) -> None:
    """restrict=on: libslirp leases an address but offers no router and no DNS server."""
    guest = vm(nics=(UserNet(restrict=True),))
    lease = guest.net.dhcp()
    assert (lease.address, lease.prefix, lease.gateway, lease.dns) == ("10.0.2.15", 24, "", "")


def test_guest_downloads_from_the_host(vm, payload_server: PayloadServer, record_property) -> None:
    expected = payload_server.add_payload("blob", EIGHT_MIB, seed=7)
    guest = vm(nics=(UserNet(restrict=False),))
    guest.net.dhcp()
    fetched = guest.net.fetch(payload_server.url("/payload/blob"))
    assert (fetched.sha256, fetched.size) == (expected, EIGHT_MIB)
    assert [(r.path, r.status, r.sent_bytes) for r in payload_server.requests] == [("/payload/blob", 200, EIGHT_MIB)]
    record_property("host_to_guest_MBps", round(fetched.megabytes_per_second, 2))
    guest.metric("host_to_guest_MBps", fetched.megabytes_per_second, "MB/s")


def test_host_fetches_from_the_guest_through_a_forward(vm, record_property) -> None:
    guest = vm(nics=(UserNet(restrict=True, forwards=(Forward(80),)),))
    guest.net.dhcp()
    expected = guest.net.make_file("/srv/blob", EIGHT_MIB)
    guest.net.serve("/srv", 80)
    host_port = guest.machine.forwarded_ports()[("tcp", 80)]
    assert host_port > 0
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/blob", timeout=guest.budget) as response:
        body = response.read()
    elapsed = time.monotonic() - started
    assert hashlib.sha256(body).hexdigest() == expected and len(body) == EIGHT_MIB
    record_property("guest_to_host_MBps", round(len(body) / 1e6 / elapsed, 2))
    guest.metric("guest_to_host_MBps", len(body) / 1e6 / elapsed, "MB/s")


def test_two_vms_on_one_wire(vm, cell) -> None:
    ours, theirs = link_pair()
    try:
        left = vm(name="left", nics=(DgramLink(ours.fileno(), mac="52:54:00:00:77:01"),))
        right = vm(name="right", nics=(DgramLink(theirs.fileno(), mac="52:54:00:00:77:02"),))
    finally:
        ours.close()
        theirs.close()
    # Link-local addresses: the wire is a socketpair inside this host, not a host network.
    left.net.set_address("169.254.77.1", 24)
    right.net.set_address("169.254.77.2", 24)
    output, code = left.run("ping -c 3 -W 5 169.254.77.2")
    assert code == 0 and "3 packets received" in output, output
    expected = right.net.make_file("/srv/blob", 1024 * 1024)
    right.net.serve("/srv", 8080)
    fetched = left.net.fetch("http://169.254.77.2:8080/blob")
    assert (fetched.sha256, fetched.size) == (expected, 1024 * 1024)


@pytest.mark.parametrize(("path", "reason"), [("/status/500", "500"), ("/drop", "")])
def test_server_errors_fail_with_the_reason(vm, payload_server: PayloadServer, path: str, reason: str) -> None:
    guest = vm(nics=(UserNet(restrict=False),))
    guest.net.dhcp()
    started = time.monotonic()
    with pytest.raises(GuestNetError, match=rf"could not fetch .*{path}.*wget exit 1\): wget: .*{reason}") as caught:
        guest.net.fetch(payload_server.url(path))
    assert time.monotonic() - started < guest.budget / 2  # failed on the error, not on a deadline
    assert payload_server.requests and payload_server.requests[-1].path == path
    assert "wget:" in str(caught.value)


def test_restricted_guest_cannot_reach_the_host(vm, payload_server: PayloadServer) -> None:
    digest = payload_server.add_payload("blob", 1024)
    url = payload_server.url("/payload/blob")
    # The positive control: the same URL, fetched by the same image over an unrestricted NIC.
    open_guest = vm(name="unrestricted", nics=(UserNet(restrict=False),))
    open_guest.net.dhcp()
    assert open_guest.net.fetch(url).sha256 == digest
    assert [r.path for r in payload_server.requests] == ["/payload/blob"]
    guest = vm(name="restricted", nics=(UserNet(restrict=True),))
    guest.net.dhcp()
    # libslirp's restrict=on refuses the connection itself (not a timeout, not an HTTP error).
    with pytest.raises(GuestNetError, match=r"could not fetch .*wget: can't connect to remote host \(10\.0\.2\.2\): "
                       "Connection refused"):
        guest.net.fetch(url, deadline=guest.deadline(60))
    assert [r.path for r in payload_server.requests] == ["/payload/blob"]  # nothing more reached the host
