"""The Debian image (issue 23) on the cells of matrix/debian.toml: a real Debian 13 root with systemd,
built rootless with every maintainer script run in a VM of its arch (images/recipes/debian.py).

Each test gets a logged-in guest restored from the cell's snapshot (one cold boot per cell and NIC
shape, then a restore of about two seconds); every test uses the same NIC, so one snapshot serves
them all. A Debian root takes 6 (x86_64) to 11 minutes (aarch64) to build under TCG, so by default
these tests run on x86_64 with OVMF; BOOTMATRIX_DEBIAN_CELLS=all runs them on all six cells
(docs/debian.md), as `bootmatrix run matrix/debian.toml` boots them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness.net import UserNet
from harness.payload_server import PayloadServer
from images.recipes.debian import PASSWORD, SALT, USER
from matrix.boot import boot_timeline
from matrix.model import load_matrix
from matrix.plugin import snapshots_on
from matrix.userspace import read_userspace
from matrix.vm import VM

DEBIAN_MATRIX = Path(__file__).parents[2] / "matrix" / "debian.toml"
ALL_CELLS = os.environ.get("BOOTMATRIX_DEBIAN_CELLS") == "all"
CELLS = [c for c in load_matrix(DEBIAN_MATRIX) if ALL_CELLS or c.id == "x86_64-ovmf-disk-debian"]
NIC = (UserNet(restrict=False),)  # one NIC shape for every test: one snapshot per cell
pytestmark = pytest.mark.vm


@pytest.fixture(params=CELLS, ids=[c.id for c in CELLS])
def guest(request: pytest.FixtureRequest, bootmatrix_vms) -> VM:
    booted: VM = bootmatrix_vms(request.param, nics=NIC)
    return booted


def test_the_boot_reaches_multi_user_with_no_failed_unit(guest: VM) -> None:
    found = read_userspace(guest.machine.console, guest.deadline())
    assert found.state == "running", f"systemd is {found.state}; failed units: {found.failed}"
    assert found.failed == []
    assert guest.run("systemctl is-active multi-user.target") == ("active", 0)
    assert guest.run("cat /proc/1/comm") == ("systemd", 0)
    # systemd's own split: kernel (with the initrd: initramfs-tools runs no systemd) and userspace.
    assert {"kernel", "userspace"} <= set(found.phases)
    assert len(found.slowest) == 3 and all(seconds > 0 for _, seconds in found.slowest)


def test_the_boot_that_made_the_snapshot_passed_every_phase_in_order(guest: VM) -> None:
    # The cold boot the snapshot was saved from kept its console transcript: its milestones, read again
    # with the cell's own timeline, come in the order a boot passes them (no second cold boot needed).
    if not guest.record.snapshot:
        pytest.skip("snapshots are off (--bootmatrix-no-snapshots or BOOTMATRIX_SNAPSHOTS=0)")
    timeline = boot_timeline(guest.record.readiness)  # type: ignore[arg-type]
    for line in (Path(guest.record.snapshot) / "boot-console.log").read_text(errors="replace").splitlines():
        stamped = re.match(r"^\[\s*([\d.]+)\] (.*)$", line)
        if stamped:
            timeline.observe(stamped.group(2) + "\n", float(stamped.group(1)))
    milestones = timeline.as_dict()
    assert {"firmware", "kernel", "initrd", "userspace", "init"} <= set(milestones), milestones
    # (riscv64's edk2 prints nothing as it hands over to systemd-boot: no "bootloader" there)
    order = [p for p in ("firmware", "bootloader", "kernel", "initrd", "userspace", "init") if p in milestones]
    assert sorted(order, key=milestones.__getitem__) == order, milestones
    # After the login the console carries only what commands print: kernel messages are off it.
    assert guest.run("cut -f1 /proc/sys/kernel/printk") == ("1", 0)


def test_networkd_takes_the_lease_and_the_guest_downloads(guest: VM, payload_server: PayloadServer) -> None:
    expected = payload_server.add_payload("blob", 1 << 20, seed=23)
    lease = guest.net.dhcp()  # systemd-networkd-wait-online: networkd asked for it at boot
    assert lease.address.startswith("10.0.2.")
    output, code = guest.run("networkctl status eth0 --no-pager")
    assert code == 0 and "routable" in output and "configured" in output, output
    fetched = guest.net.fetch(payload_server.url("/payload/blob"))
    assert (fetched.sha256, fetched.size) == (expected, 1 << 20)


def test_the_maintainer_scripts_really_ran(guest: VM) -> None:
    # systemd's postinst made its system users (systemd-sysusers); mawk's its alternatives link.
    user, code = guest.run("getent passwd systemd-network")
    assert code == 0 and user.startswith("systemd-network:"), user
    assert guest.run("readlink /etc/alternatives/awk") == ("/usr/bin/mawk", 0)
    # Every package is configured; the kernel's postinst ran initramfs-tools, whose initrd is booting.
    assert guest.run("dpkg-query -W -f '${db:Status-Abbrev}\\n' | grep -cv '^ii '")[0] == "0"
    assert guest.run("test -s /boot/initrd.img-$(uname -r) && echo yes") == ("yes", 0)
    # The test user, with the known password's fixed-salt hash.
    shadow, code = guest.run(f"getent shadow {USER} | cut -d: -f2")
    assert code == 0 and shadow.startswith(SALT), shadow
    expected, _ = guest.run(f"perl -e 'print crypt($ARGV[0], $ARGV[1])' {PASSWORD} '{SALT}'")
    assert shadow == expected


def test_guests_restored_from_one_snapshot_do_not_see_each_others_writes(request: pytest.FixtureRequest,
                                                                        bootmatrix_vms) -> None:
    if not snapshots_on(request.config):
        pytest.skip("snapshots are off (--bootmatrix-no-snapshots or BOOTMATRIX_SNAPSHOTS=0)")
    cell = CELLS[0]
    first = bootmatrix_vms(cell, name="first", nics=NIC)
    second = bootmatrix_vms(cell, name="second", nics=NIC)
    assert first.record.snapshot and first.record.snapshot == second.record.snapshot
    assert first.run("echo from-first > /root/mine && sync && cat /root/mine") == ("from-first", 0)
    assert second.run("cat /root/mine")[1] != 0
    assert second.run("journalctl --no-pager -q -b | grep -c from-first")[0] == "0"
