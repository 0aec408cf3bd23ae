"""QEMU argv per arch: built from a cell and an image without starting anything."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness.deadline import Deadline
from harness.machine import Machine
from harness.net import UserNet, nic_args
from harness.qemu import QemuInstall
from harness.spec import HarnessFds, MachineSpec, Pflash, SpecError, build_argv, validate
from images.recipes.firmware import Edk2, FirmwareSet
from images.recipes.minimal import MinimalImage
from matrix.model import Cell
from matrix.profiles import BootMedia, spec_for

FDS = HarnessFds(console_fd=7, qmp_fd=9, pidfile=Path("/w/qemu.pid"))


def image(arch: str) -> MinimalImage:
    return MinimalImage(arch, Path(f"/img/{arch}/kernel"), Path(f"/img/{arch}/initramfs.cpio"), "6.12")


FIRMWARE_ROOT = Path("/fw")


class FakeFirmware(FirmwareSet):
    """A firmware set whose files need not exist: argv building only names them."""

    def file(self, relative: str, what: str) -> Path:
        return self.root / relative


class FakeUefi(FakeFirmware):
    def edk2(self, arch: str, secure: bool = False, enrolled: bool = False) -> Edk2:
        return Edk2(self.root / f"{arch}-code.fd", self.root / f"{arch}-vars.fd", "fake.json", ())


def media(arch: str) -> BootMedia:
    return BootMedia(image(arch), FakeFirmware("trixie", FIRMWARE_ROOT, {}))


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == option]


@pytest.mark.parametrize(
    ("arch", "firmware", "machine", "cpu", "console", "bios"),
    [
        ("x86_64", "seabios", "q35", None, "ttyS0", "usr/share/seabios/bios-256k.bin"),
        ("aarch64", "virt", "virt", "cortex-a57", "ttyAMA0", None),
        ("riscv64", "opensbi", "virt", None, "ttyS0", "usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"),
    ],
)
def test_direct_kernel_argv_per_arch(  # noqa: PLR0917 - one argument per parametrized column
    arch: str, firmware: str, machine: str, cpu: str | None, console: str, bios: str | None
) -> None:
    spec = spec_for(Cell(arch=arch, firmware=firmware), media(arch), "tcg")
    argv = build_argv(spec, [f"qemu-system-{arch}"], [], FDS)
    assert argv[0] == f"qemu-system-{arch}"
    assert option_values(argv, "-machine") == [machine]
    assert option_values(argv, "-accel") == ["tcg"]
    assert option_values(argv, "-cpu") == ([cpu] if cpu else [])
    assert option_values(argv, "-kernel") == [f"/img/{arch}/kernel"]
    assert option_values(argv, "-initrd") == [f"/img/{arch}/initramfs.cpio"]
    append = option_values(argv, "-append")[0]
    assert f"console={console}" in append and "panic=-1" in append
    # The harness owns console and monitor, on the inherited fds, and nothing else is added by QEMU.
    assert option_values(argv, "-chardev") == ["socket,id=console,fd=7", "socket,id=qmp,fd=9"]
    assert option_values(argv, "-serial") == ["chardev:console"]
    assert option_values(argv, "-mon") == ["chardev=qmp,mode=control"]
    for flag in ("-nodefaults", "-no-reboot", "-nographic"):
        assert flag in argv
    assert option_values(argv, "-pidfile") == ["/w/qemu.pid"]
    assert option_values(argv, "-nic") == ["none"]
    assert option_values(argv, "-bios") == ([str(FIRMWARE_ROOT / bios)] if bios else [])


def test_x86_gets_pvpanic_so_panics_reach_qmp() -> None:
    spec = spec_for(Cell(arch="x86_64", firmware="seabios"), media("x86_64"), "kvm")
    argv = build_argv(spec, ["q"], [], FDS)
    assert option_values(argv, "-device") == ["pvpanic"]
    assert option_values(argv, "-accel") == ["kvm"]


def test_memory_smp_and_extra_append_come_from_the_cell() -> None:
    cell = Cell(arch="riscv64", firmware="opensbi", memory_mib=1024, smp=2, append="quiet")
    argv = build_argv(spec_for(cell, media("riscv64"), "tcg"), ["q"], [], FDS)
    assert option_values(argv, "-m") == ["1024"] and option_values(argv, "-smp") == ["2"]
    assert option_values(argv, "-append")[0].endswith(" quiet")


def test_stick_cells_boot_a_snapshotted_disk_not_a_kernel() -> None:
    stick = Path("/cache/stick.img")
    cell = Cell(arch="riscv64", firmware="uboot", media="stick")
    spec = spec_for(cell, BootMedia(image("riscv64"), FakeFirmware("trixie", FIRMWARE_ROOT, {}), stick), "tcg")
    argv = build_argv(spec, ["q"], [], FDS)
    assert option_values(argv, "-drive") == ["file=/cache/stick.img,format=raw,if=none,id=disk0,snapshot=on"]
    # S-mode U-Boot is OpenSBI's payload: -bios OpenSBI, -kernel U-Boot, no initrd or append of ours.
    opensbi = FIRMWARE_ROOT / "usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"
    assert option_values(argv, "-bios") == [str(opensbi)]
    assert option_values(argv, "-kernel") == [str(FIRMWARE_ROOT / "usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin")]
    assert option_values(argv, "-initrd") == [] and option_values(argv, "-append") == []


def test_pflash_banks_are_blockdev_nodes_named_by_the_machine() -> None:
    spec = MachineSpec("riscv64", "virt", machine_options=("acpi=off",),
                       pflash=(Pflash(Path("/c.fd"), True), Pflash(Path("/v.fd"), False)))
    argv = build_argv(spec, ["q"], [], FDS)
    assert option_values(argv, "-machine") == ["virt,acpi=off,pflash0=pflash0,pflash1=pflash1"]
    assert option_values(argv, "-blockdev") == [
        "node-name=pflash0,driver=file,filename=/c.fd,read-only=on",
        "node-name=pflash1,driver=file,filename=/v.fd,read-only=off",
    ]


def test_disks_are_snapshotted_virtio_by_default() -> None:
    from harness.spec import Disk

    spec = MachineSpec("x86_64", "q35", disks=(Disk(Path("/stick.img")),))
    argv = build_argv(spec, ["q"], [], FDS)
    assert option_values(argv, "-drive") == ["file=/stick.img,format=raw,if=none,id=disk0,snapshot=on"]
    assert option_values(argv, "-device") == ["virtio-blk-pci,drive=disk0"]


def test_wrong_pflash_size_is_refused_before_launch(tmp_path: Path) -> None:
    from harness.spec import SpecError, validate

    code, small_vars = tmp_path / "CODE.fd", tmp_path / "VARS.fd"
    code.write_bytes(b"\0" * 64 * 1024 * 1024)
    small_vars.write_bytes(b"\0" * 2 * 1024 * 1024)
    spec = MachineSpec("aarch64", "virt", pflash=(Pflash(code, True), Pflash(small_vars, False)))
    with pytest.raises(SpecError, match=r"pflash1 VARS.fd is 2097152 bytes; aarch64 virt needs exactly 67108864"):
        validate(spec)
    with pytest.raises(SpecError, match="does not exist"):
        validate(MachineSpec("x86_64", "q35", kernel=tmp_path / "missing"))


def test_prefix_install_runs_through_its_own_loader(tmp_path: Path) -> None:
    libdir = tmp_path / "usr/lib/x86_64-linux-gnu"
    (libdir / "qemu").mkdir(parents=True)
    (libdir / "ld-linux-x86-64.so.2").write_text("")
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/qemu-system-riscv64").write_text("")
    (tmp_path / "usr/share/qemu").mkdir(parents=True)
    install = QemuInstall.from_prefix("pinned", tmp_path)
    command = install.command("riscv64")
    assert command == [
        str(libdir / "ld-linux-x86-64.so.2"), "--library-path", str(libdir),
        "--argv0", "qemu-system-riscv64", str(tmp_path / "usr/bin/qemu-system-riscv64"),
    ]
    assert install.data_args() == ["-L", str(tmp_path / "usr/share/qemu")]
    assert install.env()["QEMU_MODULE_DIR"] == str(libdir / "qemu")


def test_user_net_binds_loopback_port_zero_and_restricts_by_default() -> None:
    from harness.net import Forward, UserNet

    spec = MachineSpec("x86_64", "q35", nics=(UserNet(forwards=(Forward(80), Forward(53, "udp"))),))
    argv = build_argv(spec, ["q"], [], FDS)
    assert option_values(argv, "-netdev") == [
        "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:0-:80,hostfwd=udp:127.0.0.1:0-:53"
    ]
    assert option_values(argv, "-device") == ["virtio-net-pci,netdev=net0"]
    assert "-nic" not in argv


def test_dgram_link_passes_its_fd() -> None:
    from harness.net import DgramLink, UserNet

    spec = MachineSpec("riscv64", "virt", nics=(UserNet(restrict=False), DgramLink(11, mac="52:54:00:00:00:02")))
    argv = build_argv(spec, ["q"], [], FDS)
    assert option_values(argv, "-netdev") == ["user,id=net0,restrict=off", "dgram,id=net1,local.type=fd,local.str=11"]
    assert option_values(argv, "-device")[1] == "virtio-net-pci,netdev=net1,mac=52:54:00:00:00:02"
    assert spec.pass_fds() == (11,)


def test_forwarded_ports_are_read_back_from_info_usernet() -> None:
    from harness.net import parse_usernet

    text = """Hub -1 (net0):
  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
  TCP[HOST_FORWARD]  11       127.0.0.1 46091       10.0.2.15    80     0     0
  UDP[HOST_FORWARD]   3       127.0.0.1 41201       10.0.2.15    53     0     0
  TCP[ESTABLISHED]   25       10.0.2.15 40000        10.0.2.2  8080     0     0
"""
    assert parse_usernet(text) == {("tcp", 80): 46091, ("udp", 53): 41201}


def test_tinyboot_cells_boot_their_iso_from_a_read_only_cd() -> None:
    iso = Path("/cache/tinyboot.iso")
    cell = Cell(arch="riscv64", firmware="edk2", media="iso", image="tinyboot", machine_options=("acpi=on",))
    spec = spec_for(cell, BootMedia(image("riscv64"), FakeUefi("trixie", FIRMWARE_ROOT, {}), None, {"iso": iso}), "tcg")
    argv = build_argv(spec, ["q"], [], FDS)
    assert option_values(argv, "-drive") == ["file=/cache/tinyboot.iso,format=raw,if=none,id=disk0,media=cdrom,"
                                             "readonly=on"]
    assert "scsi-cd,drive=disk0,bus=scsi0.0,bootindex=0" in option_values(argv, "-device")
    assert option_values(argv, "-kernel") == [] and option_values(argv, "-append") == []
    # The cell's acpi=on replaces the edk2 profile's acpi=off instead of following it.
    assert option_values(argv, "-machine") == ["virt,acpi=on,pflash0=pflash0,pflash1=pflash1"]


def test_a_guest_reboot_ends_qemu_unless_the_spec_follows_it() -> None:
    spec = spec_for(Cell(arch="x86_64", firmware="seabios"), media("x86_64"), "tcg")
    assert "-no-reboot" in build_argv(spec, ["q"], [], FDS)
    argv = build_argv(replace(spec, on_reboot="reset"), ["q"], [], FDS)
    assert "-no-reboot" not in argv and option_values(argv, "-action") == ["reboot=reset"]
    with pytest.raises(SpecError, match="on_reboot 'loop'"):
        validate(replace(spec, on_reboot="loop", kernel=None, initrd=None, bios=None))  # type: ignore[arg-type]


def test_a_second_user_nic_gets_its_own_network() -> None:
    argv = nic_args((UserNet(), UserNet(network="10.0.3.0/24")))
    assert option_values(argv, "-netdev") == ["user,id=net0,restrict=on", "user,id=net1,restrict=on,net=10.0.3.0/24"]


def test_reboot_and_wait_refuses_a_machine_that_exits_on_reboot(tmp_path: Path) -> None:
    """Checked before anything is asked of QEMU: under -no-reboot the guest's reboot would end QEMU."""
    spec = spec_for(Cell(arch="x86_64", firmware="seabios"), media("x86_64"), "tcg")
    machine = Machine(spec, QemuInstall.host(), tmp_path)
    with pytest.raises(SpecError, match="reboot_and_wait needs on_reboot='reset'"):
        machine.reboot_and_wait("ready", Deadline.after(1))


def test_a_comma_in_a_path_is_doubled_so_it_adds_no_option() -> None:
    """QEMU splits option lists at commas; a path `x.img,file=secret.img` must stay one value."""
    from harness.spec import Disk

    spec = MachineSpec("aarch64", "virt", disks=(Disk(Path("/w/x.img,file=secret.img")),),
                       pflash=(Pflash(Path("/Smith, John/c.fd"), True),))
    argv = build_argv(spec, ["q"], [], FDS)
    assert option_values(argv, "-drive") == ["file=/w/x.img,,file=secret.img,format=raw,if=none,id=disk0,snapshot=on"]
    assert option_values(argv, "-blockdev") == [
        "node-name=pflash0,driver=file,filename=/Smith,, John/c.fd,read-only=on"]


def test_dry_run_argv_names_the_vms_own_vars_copy(tmp_path: Path) -> None:
    """The argv a dry run prints is the one start() runs: the VARS bank is the VM's writable copy in its
    work folder, never the store's template."""
    code, template = tmp_path / "code.fd", tmp_path / "vars.fd"
    code.write_bytes(b"c")
    template.write_bytes(b"v")
    spec = MachineSpec("x86_64", "q35", pflash=(Pflash(code, True), Pflash(template, False)))
    machine = Machine(spec, QemuInstall.host(), tmp_path / "vm")
    banks = option_values(machine.planned_argv(), "-blockdev")
    assert banks == [f"node-name=pflash0,driver=file,filename={code},read-only=on",
                     f"node-name=pflash1,driver=file,filename={tmp_path}/vm/pflash1-vars.fd,read-only=off"]
    assert not (tmp_path / "vm" / "pflash1-vars.fd").exists()  # a dry run copies nothing
