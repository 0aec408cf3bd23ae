"""The UKI writer (images/uki.py): sections appended to a PE32+ stub where a UEFI loader finds them."""

from __future__ import annotations

import itertools
import struct

import pytest

from images.uki import SECTION_ORDER, UkiError, add_sections, build_uki, read_layout, section_data


def fake_stub(sections: int = 2, header_room: int = 0x400) -> bytes:
    """A minimal PE32+ image: DOS header, PE signature, COFF header, optional header, `sections` sections
    of 0x200 bytes each at 0x1000-aligned addresses."""
    pe = 0x80
    optional_size = 240
    image = bytearray(header_room)
    image[:2] = b"MZ"
    struct.pack_into("<I", image, 0x3C, pe)
    image[pe:pe + 4] = b"PE\0\0"
    struct.pack_into("<HH", image, pe + 4, 0x8664, sections)
    struct.pack_into("<H", image, pe + 20, optional_size)
    optional = pe + 24
    struct.pack_into("<H", image, optional, 0x20B)
    struct.pack_into("<II", image, optional + 32, 0x1000, 0x200)  # section and file alignment
    struct.pack_into("<I", image, optional + 56, 0x1000 * (sections + 1))  # SizeOfImage
    struct.pack_into("<I", image, optional + 60, header_room)  # SizeOfHeaders
    table = optional + optional_size
    for index in range(sections):
        struct.pack_into("<8sIIII", image, table + index * 40, f".s{index}".encode(), 0x200, 0x1000 * (index + 1),
                         0x200, header_room + index * 0x200)
    for index in range(sections):
        image += bytes([index + 1]) * 0x200
    return bytes(image)


def test_sections_are_appended_in_order_and_read_back() -> None:
    stub = fake_stub()
    uki = build_uki(stub, b"KERNEL" * 1000, b"INITRD" * 500, "console=ttyS0", "ID=tinyboot\n")
    layout = read_layout(uki)
    assert [s.name for s in layout.sections] == [".s0", ".s1", *SECTION_ORDER]
    assert section_data(uki, ".linux") == b"KERNEL" * 1000
    assert section_data(uki, ".initrd") == b"INITRD" * 500
    assert section_data(uki, ".cmdline") == b"console=ttyS0"
    assert section_data(uki, ".osrel") == b"ID=tinyboot\n"
    new = layout.sections[2:]
    # Each section starts on the file and section alignments, after the stub's, without overlapping.
    assert all(s.raw_pointer % 0x200 == 0 and s.virtual_address % 0x1000 == 0 for s in new)
    assert new[0].virtual_address >= 0x3000
    for before, after in itertools.pairwise(new):
        assert after.virtual_address >= before.virtual_address + before.virtual_size
        assert after.raw_pointer == before.raw_pointer + before.raw_size
    size_of_image, = struct.unpack_from("<I", uki, 0x80 + 24 + 56)
    assert size_of_image >= new[-1].virtual_address + new[-1].virtual_size and size_of_image % 0x1000 == 0
    assert uki[:len(stub)] != stub and uki[0x400:len(stub)] == stub[0x400:]  # the stub's own bytes stay


def test_the_same_inputs_give_the_same_bytes() -> None:
    assert build_uki(fake_stub(), b"k", b"i", "c", "o") == build_uki(fake_stub(), b"k", b"i", "c", "o")


def test_a_stub_without_header_room_or_with_the_section_already_is_refused() -> None:
    with pytest.raises(UkiError, match="no room for 4 more section headers"):
        build_uki(fake_stub(sections=2, header_room=0x1A8 + 2 * 40 + 40), b"k", b"i", "c", "o")
    with pytest.raises(UkiError, match="already has section"):
        add_sections(fake_stub(), [(".s1", b"x")])
    with pytest.raises(UkiError, match="not a PE file"):
        read_layout(b"ELF" + bytes(100))
