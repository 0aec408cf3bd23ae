"""A user's own artifacts: matrix keys, their sources (path, url + sha256, deb + path), the argv they
give, and a clear one-line error for each bad input before QEMU starts."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import images.debian.download as download_module
from harness.payload_server import PayloadServer
from harness.spec import Disk, MachineSpec, build_argv
from images.artifacts import ArtifactError, ArtifactSource, artifact_set, disk_format, resolve
from images.debian.fetch import DebianFetcher
from images.debian.lock import Lockfile
from images.store import Store
from matrix.model import Cell, MatrixError, cell_from_options, load_matrix
from matrix.profiles import BootMedia, spec_for
from tests.debian_mirror import SUITE, LocalMirror
from tests.unit.test_argv import option_values
from tests.unit.test_matrix import write

EXAMPLES = Path(__file__).parents[2] / "matrix" / "examples.toml"


def test_examples_load_with_ids_that_say_what_boots() -> None:
    ids = [c.id for c in load_matrix(EXAMPLES)]
    assert "x86_64-seabios-iso-ipxe" in ids and "aarch64-aavmf-efi-ipxe-arm64" in ids
    assert "aarch64-virt-direct-rt-kernel" in ids and "riscv64-edk2-efi-ipxe-riscv64" in ids
    assert all(c.artifact_cell for c in load_matrix(EXAMPLES))


def test_local_paths_are_relative_to_the_matrix_file(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out/Image").write_bytes(b"kernel")
    (cell,) = load_matrix(write(tmp_path, '[[cell]]\narch = "riscv64"\nfirmware = "opensbi"\n'
                                          'kernel = "out/Image"\nready = "login:"\n'))
    assert cell.kernel is not None and cell.kernel.path == str(tmp_path / "out/Image")
    assert cell.id == "riscv64-opensbi-direct-Image" and cell.media == "direct"


@pytest.mark.parametrize(("body", "expected"), [
    ('kernel = "nope/Image"', r"cell\[0\]\.kernel: .*/nope/Image does not exist \(given as 'nope/Image'\)"),
    ('iso = { url = "http://x/a.iso" }', r"cell\[0\]\.iso: url needs sha256"),
    ('iso = { url = "http://x/a.iso", sha256 = "12" }', r"cell\[0\]\.iso: url needs sha256"),
    ('iso = { deb = "ipxe" }', r"cell\[0\]\.iso: deb needs path"),
    ('iso = { deb = "ipxe", path = "a", bogus = 1 }', r"cell\[0\]\.iso\.bogus: unknown key"),
    ('kernal = "x"', r"cell\[0\]\.kernal: unknown key"),
    ('iso = { path = "a", url = "http://x" }', r"give exactly one source"),
    ('efi = "a"', r"efi needs UEFI firmware; seabios is not"),
    ('iso = "a"\ndisk = "b"', r"one of kernel, iso, disk, efi boots a cell"),
    ('ready = "x"', r"ready applies to cells that boot their own artifact"),
    ('initrd = { image = "minimal" }', r"initrd applies to cells that boot their own artifact"),
])
def test_bad_artifact_keys_name_the_key(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(MatrixError, match=expected) as caught:
        load_matrix(write(tmp_path, f'[[cell]]\narch = "x86_64"\nfirmware = "seabios"\n{body}\n'))
    assert len(str(caught.value).splitlines()) == 1


def test_the_command_line_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match=r"^command line: --kernel: .*/Image does not exist"):
        cell_from_options({"arch": "riscv64", "firmware": "opensbi", "kernel": "Image"}, tmp_path)
    with pytest.raises(MatrixError, match=r"^command line: firmware 'seabios' is not available for riscv64"):
        cell_from_options({"arch": "riscv64", "firmware": "seabios", "kernel": "Image"}, tmp_path)


def test_cli_refuses_a_missing_file_with_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "matrix.cli", "run", "--arch", "x86_64", "--kernel", "nope",
                           "--results", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, check=False,
                          env={"PYTHONPATH": str(Path(__file__).parents[2]), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "error: command line: --kernel:" in done.stdout and "nope does not exist" in done.stdout


def artifact_media(tmp_path: Path, **files: Path) -> BootMedia:
    return BootMedia(None, None, None, files)


def test_an_iso_is_a_cd_rom_on_virtio_scsi_booted_first(tmp_path: Path) -> None:
    iso = tmp_path / "a.iso"
    iso.write_bytes(b"\0" * 4096)
    cell = Cell(arch="x86_64", firmware="seabios", iso=str(iso), ready="iPXE")
    from images.recipes.firmware import FirmwareSet  # a set with a SeaBIOS file is all this needs

    class Fw(FirmwareSet):
        def __init__(self) -> None:
            pass

        def seabios(self) -> Path:
            return tmp_path / "bios.bin"

    spec = spec_for(cell, BootMedia(None, Fw(), None, {"iso": iso}), "tcg")
    argv = build_argv(spec, ["qemu"], [], _fds(tmp_path))
    assert f"file={iso},format=raw,if=none,id=disk0,media=cdrom,readonly=on" in option_values(argv, "-drive")
    assert "scsi-cd,drive=disk0,bus=scsi0.0,bootindex=0" in option_values(argv, "-device")
    assert "-kernel" not in argv and "-append" not in argv


def _fds(tmp_path: Path):
    from harness.spec import HarnessFds

    return HarnessFds(3, 4, tmp_path / "pid")


def test_a_user_kernel_gets_its_append_after_the_console_and_a_qcow2_disk_stays_qcow2(tmp_path: Path) -> None:
    kernel, disk, dtb = tmp_path / "Image", tmp_path / "root.qcow2", tmp_path / "board.dtb"
    for path in (kernel, dtb):
        path.write_bytes(b"x")
    disk.write_bytes(b"QFI\xfb" + b"\0" * 508)
    cell = Cell(arch="aarch64", firmware="virt", kernel=str(kernel), disk=str(disk), dtb=str(dtb),
                append="root=/dev/vda rw", machine_options=("gic-version=3",))
    spec = spec_for(cell, BootMedia(None, None, None, {"kernel": kernel, "disk": disk, "dtb": dtb}), "tcg")
    argv = build_argv(spec, ["qemu"], [], _fds(tmp_path))
    assert option_values(argv, "-append") == ["console=ttyAMA0 root=/dev/vda rw"]
    assert option_values(argv, "-dtb") == [str(dtb)]
    assert option_values(argv, "-machine") == ["virt,gic-version=3"]
    assert f"file={disk},format=qcow2,if=none,id=disk0,snapshot=on" in option_values(argv, "-drive")
    own_console = cell.model_copy(update={"append": "console=hvc0"})
    assert spec_for(own_console, BootMedia(None, None, None, {"kernel": kernel}), "tcg").append == "console=hvc0"
    no_console = cell.model_copy(update={"console": ""})
    assert spec_for(no_console, BootMedia(None, None, None, {"kernel": kernel}), "tcg").append == "root=/dev/vda rw"
    assert disk_format(kernel) == "raw"


def test_a_user_disk_is_never_written(tmp_path: Path) -> None:
    """Every drive but a CD-ROM (read-only) goes through QEMU's per-VM overlay (snapshot=on)."""
    disk = Disk(tmp_path / "d.img", format="qcow2")
    argv = build_argv(MachineSpec("x86_64", "q35", disks=(disk,)), ["qemu"], [], _fds(tmp_path))
    assert any("snapshot=on" in value for value in option_values(argv, "-drive"))


@pytest.fixture
def server() -> Iterator[PayloadServer]:
    with PayloadServer() as served:
        yield served


def test_a_url_artifact_is_downloaded_once_and_verified(tmp_path: Path, server: PayloadServer) -> None:
    data = b"an ISO nobody here wrote\n" * 1000
    server.payloads["a.iso"] = data
    store = Store(tmp_path / "store")
    source = ArtifactSource(url=server.url("/payload/a.iso", for_guest=False), sha256=hashlib.sha256(data).hexdigest())
    path = resolve(source, "cell[0].iso", store, None)
    assert path.read_bytes() == data and path.name == "a.iso"
    assert resolve(source, "cell[0].iso", store, None) == path
    assert len([r for r in server.requests if r.path == "/payload/a.iso"]) == 1


def test_a_url_artifact_with_the_wrong_sha256_is_refused_and_not_stored(
    tmp_path: Path, server: PayloadServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(download_module, "BACKOFF", 0.01)
    server.payloads["a.iso"] = b"tampered"
    store = Store(tmp_path / "store")
    source = ArtifactSource(url=server.url("/payload/a.iso", for_guest=False), sha256="0" * 64)
    with pytest.raises(ArtifactError, match=r"^cell\[0\]\.iso: .*a\.iso: got 8 bytes with sha256 .* expected sha256 "
                                            r"0{64}; refusing it$"):
        resolve(source, "cell[0].iso", store, None)
    assert store.entries() == []
    assert not any(p.is_file() for p in (tmp_path / "store").rglob("a.iso*"))
    with pytest.raises(ArtifactError, match=r"HTTP 404"):
        resolve(ArtifactSource(url=server.url("/payload/none", for_guest=False), sha256="0" * 64), "iso", store, None)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[LocalMirror]:
    served = LocalMirror(tmp_path)
    served.add_deb("bm-data", "1.0-1", "all", b"firmware under test\n")
    served.publish([("bm-data", "all", "1.0-1")])
    yield served
    served.close()


def test_a_deb_artifact_comes_from_the_lock_and_names_what_is_wrong(mirror: LocalMirror, tmp_path: Path) -> None:
    lock = Lockfile(SUITE, {artifact_set("bm-data", "all"): [mirror.locked("bm-data", "all", "1.0-1")]},
                    tmp_path / "lock.json")
    fetcher = DebianFetcher(tmp_path / "cache", lock, mirror.mirror(), locked=True)
    store = Store(tmp_path / "store")
    good = ArtifactSource(deb="bm-data", member="usr/share/bm-data/payload")
    path = resolve(good, "cell[0].bios", store, fetcher, "amd64")
    assert path.read_bytes() == b"firmware under test\n"
    assert resolve(good, "cell[0].bios", store, fetcher, "amd64") == path
    assert mirror.downloads() and set(mirror.downloads().values()) == {1}
    with pytest.raises(ArtifactError, match=r"^cell\[0\]\.bios: bm-data 1\.0-1 has no file usr/lib/nope "
                                            r"\(it has: .*usr/share/bm-data/payload"):
        resolve(ArtifactSource(deb="bm-data", member="usr/lib/nope"), "cell[0].bios", store, fetcher, "amd64")
    with pytest.raises(ArtifactError, match=r"'ipxe' is not in lock\.json: add it with `bootmatrix lock --add ipxe`"):
        resolve(ArtifactSource(deb="ipxe", member="x"), "cell[0].iso", store, fetcher, "amd64")
    with pytest.raises(ArtifactError, match=r"has bm-data 1\.0-1, not 9\.9: `bootmatrix lock --add bm-data=9\.9`"):
        resolve(ArtifactSource(deb="bm-data=9.9", member="x"), "cell[0].iso", store, fetcher, "amd64")


@pytest.mark.bootmatrix_needs("qemu-img", "qemu-utils", "make qcow2 images")
@pytest.mark.parametrize("how", ["backing", "data-file"])
def test_a_qcow2_disk_naming_a_host_file_is_refused_before_qemu_starts(
    tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user's qcow2 with a backing file (or an external data file) would let its guest read that host
    file: `bootmatrix run` refuses it with one line naming the disk, and starts nothing."""
    secret = tmp_path / "host-secret.txt"
    secret.write_bytes(b"s3cret".ljust(1 << 16, b"\0"))
    evil = tmp_path / "evil.qcow2"
    options = ["-F", "raw", "-b", str(secret)] if how == "backing" else ["-o", f"data_file={secret},data_file_raw=on"]
    size = [] if how == "backing" else ["64K"]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *options, str(evil), *size], check=True)
    clean = tmp_path / "clean.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(clean), "1M"], check=True)
    from images.artifacts import checked_disk, host_files_named_by

    assert host_files_named_by(clean) is None and checked_disk(clean, "disk") == clean
    with pytest.raises(ArtifactError, match=r"evil.qcow2 is a qcow2 image naming .*self-contained"):
        checked_disk(evil, "cell: disk")
    from matrix.cli import main

    code = main(["run", "--arch", "x86_64", "--disk", str(evil), "--results", str(tmp_path / "r"), "--no-history"])
    line = [text for text in capsys.readouterr().out.splitlines() if "naming" in text]
    assert code == 1 and line, "the run fails the cell, naming why"
    assert not list((tmp_path / "r").glob("*/*/argv.txt")), "QEMU was not started"
