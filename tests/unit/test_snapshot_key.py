"""What a snapshot is keyed by: everything a restore must match, and nothing it must not."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

from harness.net import DgramLink, Forward, UserNet
from harness.snapshot import Snapshot, fingerprint_key, restored_spec
from harness.spec import Disk, MachineSpec, Pflash


def spec(tmp_path: Path) -> MachineSpec:
    kernel = tmp_path / "vmlinuz"
    if not kernel.exists():
        kernel.write_bytes(b"kernel v1")
    return MachineSpec("x86_64", "q35", kernel=kernel, append="console=ttyS0", nics=(UserNet(),))


def test_a_changed_image_gets_another_snapshot(tmp_path: Path) -> None:
    before = fingerprint_key(spec(tmp_path), "pinned 10.0.13")
    assert fingerprint_key(spec(tmp_path), "pinned 10.0.13") == before
    (tmp_path / "vmlinuz").write_bytes(b"kernel v2")  # same path, new bytes: size and mtime change
    os.utime(tmp_path / "vmlinuz", ns=(1, 1))
    assert fingerprint_key(spec(tmp_path), "pinned 10.0.13") != before


def test_the_machine_and_the_qemu_build_are_keyed_but_not_the_nic_backends(tmp_path: Path) -> None:
    base = spec(tmp_path)
    key = fingerprint_key(base, "pinned 10.0.13")
    assert fingerprint_key(base, "host 7.2.22") != key
    for changed in (replace(base, memory_mib=1024), replace(base, smp=2), replace(base, append="quiet"),
                    replace(base, nics=(UserNet(mac="52:54:00:00:00:09"),)), replace(base, nics=()),
                    replace(base, nics=(DgramLink(5),))):
        assert fingerprint_key(changed, "pinned 10.0.13") != key, changed
    # The NIC backend's settings come from the restoring command line: the same snapshot serves them.
    for nic in (UserNet(restrict=False), UserNet(forwards=(Forward(80),))):
        same = replace(base, nics=(nic,))
        assert fingerprint_key(same, "pinned 10.0.13") == key
    assert fingerprint_key(replace(base, nics=(DgramLink(5),)), "q") == fingerprint_key(
        replace(base, nics=(DgramLink(9),)), "q")


def test_a_restored_spec_waits_for_its_state_and_keeps_the_snapshot_unwritten(tmp_path: Path) -> None:
    saved = tmp_path / "snap"
    saved.mkdir()
    (saved / "pflash1.fd").write_bytes(b"vars at the save point")
    base = replace(spec(tmp_path), disks=(Disk(tmp_path / "cd.iso", interface="scsi-cd", snapshot=False),))
    restored = restored_spec(base, Snapshot(saved), tmp_path / "vm")
    assert restored.extra_args[-2:] == ("-incoming", "defer")
    assert restored.disks == base.disks  # no saved overlay for a CD-ROM: it is opened as it was


def test_a_restored_spec_opens_the_saved_disks_through_fresh_overlays_and_the_saved_vars(tmp_path: Path) -> None:
    """What restored_spec must carry over from the save: each saved disk, behind an overlay of the new
    VM's own (so the saved one is never written), and the saved VARS bank in place of the template;
    the read-only CODE bank and a disk that was not saved stay as they were."""
    saved = tmp_path / "snap"
    saved.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(saved / "disk0.qcow2"), "1M"], check=True)
    (saved / "pflash1.fd").write_bytes(b"vars at the save point")
    code, template = Pflash(tmp_path / "CODE.fd", readonly=True), Pflash(tmp_path / "VARS.fd", readonly=False)
    root, scratch = Disk(tmp_path / "root.img"), Disk(tmp_path / "scratch.img")
    base = replace(spec(tmp_path), disks=(root, scratch), pflash=(code, template))
    restored = restored_spec(base, Snapshot(saved), tmp_path / "vm")

    overlay = restored.disks[0]
    assert (overlay.path, overlay.format, overlay.snapshot) == (tmp_path / "vm/disk0-restored.qcow2", "qcow2", False)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay.path)], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["backing-filename"] == str(saved / "disk0.qcow2")
    assert restored.disks[1] == scratch  # disk 1 was not saved: opened as the spec says
    assert restored.pflash == (code, Pflash(saved / "pflash1.fd", readonly=False))
