"""QEMU argv per arch: built from a cell and an image without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.qemu import QemuInstall
from harness.spec import HarnessFds, MachineSpec, Pflash, build_argv
from images.recipes.minimal import MinimalImage
from matrix.model import Cell
from matrix.profiles import spec_for

FDS = HarnessFds(console_fd=7, qmp_fd=9, pidfile=Path("/w/qemu.pid"))


def image(arch: str) -> MinimalImage:
    return MinimalImage(arch, Path(f"/img/{arch}/kernel"), Path(f"/img/{arch}/initramfs.cpio"), "6.12")


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == option]


@pytest.mark.parametrize(
    ("arch", "firmware", "machine", "cpu", "console"),
    [
        ("x86_64", "seabios", "q35", None, "ttyS0"),
        ("aarch64", "virt", "virt", "cortex-a57", "ttyAMA0"),
        ("riscv64", "opensbi", "virt", None, "ttyS0"),
    ],
)
def test_direct_kernel_argv_per_arch(arch: str, firmware: str, machine: str, cpu: str | None, console: str) -> None:
    spec = spec_for(Cell(arch=arch, firmware=firmware), image(arch), "tcg")  # type: ignore[arg-type]
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
    for flag in ("-nodefaults", "-no-reboot"):
        assert flag in argv
    assert option_values(argv, "-display") == ["none"]
    assert option_values(argv, "-pidfile") == ["/w/qemu.pid"]
    assert option_values(argv, "-nic") == ["none"]


def test_x86_gets_pvpanic_so_panics_reach_qmp() -> None:
    spec = spec_for(Cell(arch="x86_64", firmware="seabios"), image("x86_64"), "kvm")
    argv = build_argv(spec, ["q"], [], FDS)
    assert option_values(argv, "-device") == ["pvpanic"]
    assert option_values(argv, "-accel") == ["kvm"]


def test_memory_smp_and_extra_append_come_from_the_cell() -> None:
    cell = Cell(arch="riscv64", firmware="opensbi", memory_mib=1024, smp=2, append="quiet")
    argv = build_argv(spec_for(cell, image("riscv64"), "tcg"), ["q"], [], FDS)
    assert option_values(argv, "-m") == ["1024"] and option_values(argv, "-smp") == ["2"]
    assert option_values(argv, "-append")[0].endswith(" quiet")


def test_pflash_units_in_order_and_code_read_only() -> None:
    spec = MachineSpec("aarch64", "virt", pflash=(Pflash(Path("/c.fd"), True), Pflash(Path("/v.fd"), False)))
    assert option_values(build_argv(spec, ["q"], [], FDS), "-drive") == [
        "if=pflash,format=raw,unit=0,readonly=on,file=/c.fd",
        "if=pflash,format=raw,unit=1,file=/v.fd",
    ]


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
