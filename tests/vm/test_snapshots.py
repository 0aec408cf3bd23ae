"""Boot once, restore per test: restored VMs are the saved one, each on its own, and a snapshot QEMU
refuses is never used (a cold boot instead, and the snapshot is rebuilt)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness.net import Forward, UserNet
from harness.spec import Disk, MachineSpec
from images.recipes.minimal import build_minimal
from matrix.firmware import DIRECT_FIRMWARE
from matrix.lab import Lab
from matrix.model import Cell
from matrix.plugin import SnapshotFallback, snapshots_on
from matrix.profiles import direct_cell

pytestmark = pytest.mark.bootmatrix_cells(media="direct", firmware=list(DIRECT_FIRMWARE.values()))


@pytest.fixture(autouse=True)
def _snapshots_on(request: pytest.FixtureRequest) -> None:
    """These tests are about restores: with snapshots turned off by the user, there is nothing to test."""
    if not snapshots_on(request.config):
        pytest.skip("snapshots are off (--bootmatrix-no-snapshots or BOOTMATRIX_SNAPSHOTS=0)")


def test_restored_vms_keep_what_was_saved_and_not_each_others_files(vm) -> None:
    first = vm(name="first")
    second = vm(name="second")
    for guest in (first, second):
        assert guest.record.snapshot and set(guest.record.milestones) >= {"process", "incoming", "ready"}
        milestones = guest.record.milestones
        assert milestones["process"] <= milestones["incoming"] <= milestones["ready"]
        assert "kernel" not in guest.record.milestones  # a restore has no boot phases to mix with cold ones
    assert first.record.snapshot == second.record.snapshot
    # The RAM dump holds whatever the guest had in memory: its folder is this user's alone.
    assert Path(first.record.snapshot).stat().st_mode & 0o077 == 0
    saved_at, code = first.run("cat /run/bootmatrix-saved-at")  # written by the guest just before the save
    assert code == 0 and float(saved_at) <= time.time()
    assert second.run("cat /run/bootmatrix-saved-at") == (saved_at, 0)
    assert first.run("echo from-first > /root/mine && cat /root/mine") == ("from-first", 0)
    assert second.run("cat /root/mine")[1] != 0
    guest_now, _ = second.run("date +%s")  # the clock was set to the host's on restore
    assert abs(float(guest_now) - time.time()) < 3


def test_a_disk_is_saved_with_the_vm_and_each_restore_writes_its_own_overlay(vm, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch.img"
    scratch.write_bytes(bytes(1 << 20))

    def with_scratch(spec: MachineSpec) -> MachineSpec:
        return MachineSpec(**{**spec.__dict__, "disks": (*spec.disks, Disk(scratch))})

    prepare = "echo before-save | dd of=/dev/vda bs=512 count=1 conv=notrunc,sync 2>/dev/null && sync"
    first = vm(name="first", customize=with_scratch, prepare=prepare)
    saved_disk = Path(first.record.snapshot) / "disk0.qcow2"
    saved_digest = hashlib.sha256(saved_disk.read_bytes()).hexdigest()
    assert first.run("head -c 11 /dev/vda") == ("before-save", 0)
    assert first.run("echo from-first | dd of=/dev/vda bs=512 seek=8 count=1 conv=notrunc,sync 2>/dev/null "
                     "&& sync && echo 3 > /proc/sys/vm/drop_caches")[1] == 0
    second = vm(name="second", customize=with_scratch, prepare=prepare)
    assert second.record.snapshot == first.record.snapshot
    assert second.run("head -c 11 /dev/vda") == ("before-save", 0)
    assert second.run("dd if=/dev/vda bs=512 skip=8 count=1 2>/dev/null | tr -d '\\000' | wc -c") == ("0", 0)
    assert scratch.read_bytes() == bytes(1 << 20)  # the base file was never written
    assert hashlib.sha256(saved_disk.read_bytes()).hexdigest() == saved_digest  # nor the saved overlay


def test_networking_works_after_a_restore(vm, payload_server) -> None:
    digest = payload_server.add_payload("blob", 256 << 10)
    guest = vm(nics=(UserNet(restrict=False, forwards=(Forward(80),)),))
    assert guest.record.snapshot
    lease = guest.net.dhcp()
    assert lease.address.startswith("10.0.2.")
    assert guest.net.fetch(payload_server.url("/payload/blob")).sha256 == digest
    assert guest.machine.forwarded_ports()[("tcp", 80)] > 0  # re-bound by this QEMU, read back


def test_a_snapshot_qemu_refuses_is_not_used_the_vm_boots_cold(
    vm, cell: Cell, bootmatrix_lab: Lab, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hand the restore another arch's snapshot: QEMU refuses the stream, the test gets a cold-booted VM
    with a warning, and the refused snapshot is dropped from the store (rebuilt on its next use)."""
    other_arch = "riscv64" if cell.arch != "riscv64" else "x86_64"
    other = direct_cell(other_arch)
    wrong = bootmatrix_lab.snapshot(other, bootmatrix_lab.spec(other, "tcg"))
    real = bootmatrix_lab.snapshot
    monkeypatch.setattr(bootmatrix_lab, "snapshot", lambda *_args, **_kwargs: wrong)
    refused_built_at = json.loads((wrong.folder.parent / "manifest.json").read_text())["created"]
    with pytest.warns(SnapshotFallback, match="restoring from a snapshot failed, booting cold instead"):
        guest = vm()
    assert guest.record.snapshot == "" and "kernel" in guest.record.milestones
    assert guest.run("uname -m") == (cell.arch, 0)
    # Dropped from the store: gone, or (under xdist) already rebuilt by a test of that arch, never kept.
    manifest = wrong.folder.parent / "manifest.json"
    assert not wrong.folder.exists() or json.loads(manifest.read_text())["created"] > refused_built_at
    monkeypatch.setattr(bootmatrix_lab, "snapshot", real)
    assert bootmatrix_lab.snapshot(other, bootmatrix_lab.spec(other, "tcg")).state.exists()  # rebuilt


def test_a_damaged_snapshot_is_rebuilt_not_used(vm, bootmatrix_lab: Lab, cell: Cell) -> None:
    # A snapshot of this test's own (its `prepare` is part of the key): the cell's shared one, damaged
    # here, would be found damaged and rebuilt by a test on another xdist worker too, under our feet.
    own = ": the snapshot this test damages"
    first = vm(name="first", prepare=own)
    first_saved_at, _ = first.run("cat /run/bootmatrix-saved-at")
    state = Path(first.record.snapshot) / "state"
    with state.open("r+b") as handle:  # flip bytes in the middle of the saved RAM
        handle.seek(state.stat().st_size // 2)
        handle.write(b"\xff" * 4096)
    damaged = hashlib.sha256(state.read_bytes()).hexdigest()
    second = vm(name="second", prepare=own)
    assert second.record.snapshot == first.record.snapshot  # the same key, rebuilt under it
    # Rebuilt, not used as it was: a new save (the guest wrote the host's time again, later) whose bytes
    # are not the damaged ones. QEMU may well accept damaged RAM: only the store's check catches it.
    assert hashlib.sha256(state.read_bytes()).hexdigest() != damaged
    second_saved_at, code = second.run("cat /run/bootmatrix-saved-at")
    assert code == 0 and float(second_saved_at) > float(first_saved_at), (first_saved_at, second_saved_at)
    assert second.run("echo $((6*7))") == ("42", 0)


def test_prepare_holds_for_a_cold_vm_too(vm) -> None:
    """`prepare` is what the VM has done before the test starts, restored or cold."""
    restored = vm(name="restored", prepare="echo prepared > /root/setup")
    cold = vm(name="cold", cold=True, prepare="echo prepared > /root/setup")
    assert restored.record.snapshot and not cold.record.snapshot
    for guest in (restored, cold):
        assert guest.run("cat /root/setup") == ("prepared", 0)


EFIVARS = "/sys/firmware/efi/efivars"
# A vendor GUID of this test's own: edk2 refuses names it does not know under the UEFI global GUID.
TEST_GUID = "4c5e3a51-8a3b-4f3e-9d1e-6b2a7c9d0e1f"


def _set_variable(name: str, value: str) -> str:
    """A shell command that writes a non-volatile UEFI variable (attributes NV|BS|RT) through efivarfs,
    which takes the attributes and the data in one write (cat of a file; printf writes in pieces)."""
    return f"printf '\\007\\000\\000\\000{value}' > /tmp/var && cat /tmp/var > {EFIVARS}/{name}-{TEST_GUID}"


def test_a_uefi_variable_written_before_the_save_is_there_after_a_restore(bootmatrix_vms, bootmatrix_lab: Lab) -> None:
    """OVMF's VARS bank is part of the snapshot: a variable set before the save is in the restored VM's
    flash and answers in its guest, and what the restored VM writes goes to its own copy, never into
    the snapshot's."""
    image = build_minimal(bootmatrix_lab.store, bootmatrix_lab.fetcher(), "x86_64", ("efivarfs",),
                          name="minimal-efivarfs")

    def with_efivarfs(spec: MachineSpec) -> MachineSpec:
        return replace(spec, initrd=image.initrd)

    cell = Cell(arch="x86_64", firmware="ovmf", media="direct")
    prepare = f"mount -t efivarfs none {EFIVARS} && {_set_variable('BmSaved', 'saved-before')}"
    guest = bootmatrix_vms(cell, customize=with_efivarfs, prepare=prepare)
    assert guest.record.snapshot, "not restored from a snapshot"
    saved_vars = Path(guest.record.snapshot) / "pflash1.fd"
    saved_digest = hashlib.sha256(saved_vars.read_bytes()).hexdigest()
    template = bootmatrix_lab.spec(cell, guest.record.accel).pflash[1].path
    assert "BmSaved".encode("utf-16-le") not in template.read_bytes()  # only the save can have put it there
    own_vars = guest.machine.spec.pflash[1].path
    assert own_vars.parent == guest.workdir and own_vars != saved_vars
    assert "BmSaved".encode("utf-16-le") in own_vars.read_bytes()
    assert guest.run(f"tail -c +5 {EFIVARS}/BmSaved-{TEST_GUID}") == ("saved-before", 0)

    assert guest.run(_set_variable("BmAfter", "after-restore"))[1] == 0
    assert guest.run(f"tail -c +5 {EFIVARS}/BmAfter-{TEST_GUID}") == ("after-restore", 0)
    assert b"after-restore" in own_vars.read_bytes()
    assert hashlib.sha256(saved_vars.read_bytes()).hexdigest() == saved_digest  # the snapshot is unwritten
