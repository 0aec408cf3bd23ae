"""Matrix files: stable sorted ids, and errors that name the file and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from matrix.model import DEFAULT_MATRIX, MatrixError, load_matrix, select


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(text)
    return path


def test_default_matrix_ids_are_stable_and_sorted(tmp_path: Path) -> None:
    ids = [c.id for c in load_matrix(DEFAULT_MATRIX)]
    assert ids == [
        "aarch64-aavmf-direct", "aarch64-aavmf-stick", "aarch64-uboot-stick", "aarch64-virt-direct",
        "riscv64-edk2-direct", "riscv64-edk2-stick", "riscv64-opensbi-direct", "riscv64-uboot-stick",
        "x86_64-ovmf-direct", "x86_64-ovmf-stick", "x86_64-seabios-direct", "x86_64-seabios-stick",
    ]
    # Stable: the ids do not depend on the order of the cells in the file.
    text = DEFAULT_MATRIX.read_text()
    head, *cells = re.split(r"(?m)^\[\[cell\]\]$", text)
    reordered = write(tmp_path, head + "".join(f"[[cell]]{c.rstrip()}\n\n" for c in reversed(cells)))
    assert [c.id for c in load_matrix(reordered)] == ids


def test_firmware_set_is_part_of_the_id_and_refused_where_no_firmware_runs(tmp_path: Path) -> None:
    path = write(tmp_path, '[[cell]]\narch = "x86_64"\nfirmware = "ovmf"\nmedia = "stick"\n'
                           'firmware_set = "bookworm"\n')
    assert [c.id for c in load_matrix(path)] == ["x86_64-ovmf-stick-bookworm"]
    path = write(tmp_path, '[[cell]]\narch = "aarch64"\nfirmware = "virt"\nfirmware_set = "bookworm"\n')
    with pytest.raises(MatrixError, match=r"cell\[0\]: firmware_set does not apply to aarch64/virt"):
        load_matrix(path)


def test_defaults_apply_and_cells_override(tmp_path: Path) -> None:
    path = write(tmp_path, """
[defaults]
memory_mib = 768
[[cell]]
arch = "riscv64"
firmware = "opensbi"
[[cell]]
arch = "riscv64"
firmware = "opensbi"
qemu = "host"
memory_mib = 1024
""")
    pinned, host = load_matrix(path)
    assert (pinned.id, pinned.memory_mib) == ("riscv64-opensbi-direct", 768)
    assert (host.id, host.memory_mib) == ("riscv64-opensbi-direct-host", 1024)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[[cell]]\narch = "x86_64"\nfirmware = "seabios"\nmemroy_mib = 4\n', r"cell\[0\]\.memroy_mib: unknown key"),
        ('[[cell]]\narch = "mips"\nfirmware = "seabios"\n', r"cell\[0\]\.arch: arch 'mips' is not one of"),
        ('[[cell]]\narch = "x86_64"\nfirmware = "uboot-typo"\n', r"cell\[0\]: firmware 'uboot-typo' is not available"),
        ('[[cell]]\narch = "riscv64"\nfirmware = "opensbi"\nmedia = "stick"\n',
         r"cell\[0\]: media 'stick' cannot boot"),
        ('[[cell]]\narch = "x86_64"\nfirmware = "seabios"\nsmp = 0\n', r"cell\[0\]\.smp: Input should be greater"),
        ('[[cell]]\narch = "x86_64"\nfirmware = "ovmf"\nmedia = "stick"\nappend = "quiet"\n',
         r"cell\[0\]: append applies to direct boots only"),
        ('[[cell]]\narch = "x86_64"\n', r"cell\[0\]\.firmware: Field required"),
        ('[defaults]\nqemu = "pinned"\n', r"(?m)^.*m\.toml: cell: Field required"),
        ('[[cell]]\narch = "x86_64"\nfirmware = "seabios"\n[[cell]]\narch = "x86_64"\nfirmware = "seabios"\n',
         r"cell\[1\]: duplicate cell id 'x86_64-seabios-direct'"),
        ('[[cell]\n', r"not valid TOML"),
        ('[[cell]]\narch = "x86_64"\nfirmware = "seabios"\nimage = "tinyboot"\n',
         r"cell\[0\]: image = \"tinyboot\" is an ISO: media = \"iso\""),
        ('[[cell]]\narch = "riscv64"\nfirmware = "opensbi"\nmedia = "iso"\nimage = "tinyboot"\n',
         r"cell\[0\]: riscv64/opensbi boots no iso"),
        ('[[cell]]\narch = "x86_64"\nfirmware = "seabios"\nmedia = "iso"\n', r"cell\[0\]: media \"iso\" boots image"),
        ('[[cell]]\narch = "x86_64"\nfirmware = "ovmf"\nmedia = "iso"\nimage = "tinyboot"\nappend = "quiet"\n',
         r"cell\[0\]: append does not apply to the tinyboot ISO"),
        ('[[cell]]\narch = "x86_64"\nfirmware = "ovmf"\nmedia = "iso"\nimage = "ab"\n',
         r"cell\[0\]: image = \"ab\" is a disk: media = \"disk\""),
        ('[[cell]]\narch = "x86_64"\nfirmware = "seabios"\nmedia = "disk"\nimage = "ab"\nappend = "quiet"\n',
         r"cell\[0\]: append does not apply to the A/B image"),
        ('[[cell]]\narch = "aarch64"\nfirmware = "aavmf"\nmedia = "direct"\nimage = "debian"\n',
         r"cell\[0\]: image = \"debian\" is a disk: media = \"disk\""),
        ('[[cell]]\narch = "riscv64"\nfirmware = "opensbi"\nmedia = "disk"\nimage = "debian"\n',
         r"cell\[0\]: riscv64/opensbi boots no disk"),
        ('[[cell]]\narch = "x86_64"\nfirmware = "ovmf"\nmedia = "disk"\nimage = "debian"\nappend = "quiet"\n',
         r"cell\[0\]: append does not apply to the Debian image"),
        ('[[cell]]\narch = "x86_64"\nfirmware = "seabios"\n[extra]\nx = 1\n', r"m\.toml: extra: unknown key"),
    ],
)
def test_bad_matrix_file_names_the_key(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(MatrixError, match=expected) as caught:
        load_matrix(path)
    assert str(path) in str(caught.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="no such matrix file"):
        load_matrix(tmp_path / "nope.toml")


def test_select_by_arch_and_id() -> None:
    cells = load_matrix(DEFAULT_MATRIX)
    assert [c.id for c in select(cells, ["riscv64"])] == [
        "riscv64-edk2-direct", "riscv64-edk2-stick", "riscv64-opensbi-direct", "riscv64-uboot-stick"
    ]
    assert [c.id for c in select(cells, None, ["x86_64-seabios-direct"])] == ["x86_64-seabios-direct"]
    with pytest.raises(MatrixError, match="unknown cell id"):
        select(cells, None, ["x86_64-nope-direct"])


def test_the_firmware_table_gives_each_arch_one_default_per_boot_that_can_boot_it() -> None:
    """matrix/firmware.py is the one table of firmware: what a file-less cell of each arch picks for a
    kernel, a disk or an EFI application exists once per arch and can boot that."""
    from arches import NAMES
    from matrix.firmware import DIRECT, DISK, EFI, KERNEL, PROFILES, STICK, profiles_of

    assert {arch for arch, _ in PROFILES} == set(NAMES)
    for arch in NAMES:
        for boots, media in ((KERNEL, DIRECT), (DISK, STICK), (EFI, STICK)):
            chosen = [p for p in profiles_of(arch).values() if boots in p.default_for]
            assert len(chosen) == 1 and media in chosen[0].media, (arch, boots, chosen)
            assert boots != EFI or chosen[0].uefi


def test_arch_and_firmware_set_errors_name_the_choices(tmp_path: Path) -> None:
    path = write(tmp_path, '[[cell]]\narch = "mips"\nfirmware = "seabios"\n')
    with pytest.raises(MatrixError, match=r"cell\[0\]\.arch: arch 'mips' is not one of x86_64, aarch64, riscv64"):
        load_matrix(path)
    path = write(tmp_path, '[[cell]]\narch = "x86_64"\nfirmware = "ovmf"\nfirmware_set = "sid"\n')
    with pytest.raises(MatrixError, match=r"firmware_set 'sid' is not one of trixie, bookworm"):
        load_matrix(path)
