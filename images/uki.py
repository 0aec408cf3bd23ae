"""A unified kernel image (UKI): systemd's EFI stub with the kernel, initramfs, command line and
os-release added as PE sections (.linux, .initrd, .cmdline, .osrel), as the UAPI UKI specification
lays out and `ukify` writes. The firmware starts the one file; the stub hands the kernel its initramfs
and command line, so no boot loader and no loader configuration are needed.

Written here rather than with ukify: appending sections to a PE file is a page of struct packing,
while ukify would bring systemd's Python tool and pefile for it. Pure, so it is unit-tested.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SECTION_HEADER = 40
READ_ONLY_DATA = 0x40000040  # IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ
PE32_PLUS = 0x20B
# The order ukify writes them in; .linux last, as the stub expects the kernel to be the final section.
SECTION_ORDER = (".osrel", ".cmdline", ".initrd", ".linux")


class UkiError(ValueError):
    pass


@dataclass(frozen=True)
class Section:
    name: str
    virtual_size: int
    virtual_address: int
    raw_size: int
    raw_pointer: int


@dataclass(frozen=True)
class PeLayout:
    pe_offset: int
    section_count: int
    section_table: int  # file offset of the first section header
    section_alignment: int
    file_alignment: int
    size_of_headers: int
    sections: tuple[Section, ...]


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def read_layout(image: bytes) -> PeLayout:
    if image[:2] != b"MZ":
        raise UkiError("not a PE file (no MZ header)")
    (pe,) = struct.unpack_from("<I", image, 0x3C)
    if image[pe:pe + 4] != b"PE\0\0":
        raise UkiError("not a PE file (no PE signature)")
    count, = struct.unpack_from("<H", image, pe + 6)
    optional_size, = struct.unpack_from("<H", image, pe + 20)
    optional = pe + 24
    magic, = struct.unpack_from("<H", image, optional)
    if magic != PE32_PLUS:
        raise UkiError(f"not a PE32+ image (optional header magic {magic:#x})")
    section_alignment, file_alignment = struct.unpack_from("<II", image, optional + 32)
    size_of_headers, = struct.unpack_from("<I", image, optional + 60)
    table = optional + optional_size
    sections = []
    for index in range(count):
        at = table + index * SECTION_HEADER
        name = image[at:at + 8].rstrip(b"\0").decode("ascii", "replace")
        virtual_size, virtual_address, raw_size, raw_pointer = struct.unpack_from("<IIII", image, at + 8)
        sections.append(Section(name, virtual_size, virtual_address, raw_size, raw_pointer))
    return PeLayout(pe, count, table, section_alignment, file_alignment, size_of_headers, tuple(sections))


def section_data(image: bytes, name: str) -> bytes:
    """The bytes of section `name` (its virtual size of them), for checks and tests."""
    for section in read_layout(image).sections:
        if section.name == name:
            return image[section.raw_pointer:section.raw_pointer + section.virtual_size]
    raise UkiError(f"no section {name}")


def build_uki(stub: bytes, kernel: bytes, initrd: bytes, cmdline: str, osrel: str) -> bytes:
    """The stub with the four sections appended: byte-identical output for identical inputs."""
    contents = {".osrel": osrel.encode(), ".cmdline": cmdline.encode(), ".initrd": initrd, ".linux": kernel}
    return add_sections(stub, [(name, contents[name]) for name in SECTION_ORDER])


def add_sections(image: bytes, sections: list[tuple[str, bytes]]) -> bytes:
    layout = read_layout(image)
    taken = {s.name for s in layout.sections}
    clash = taken & {name for name, _ in sections}
    if clash:
        raise UkiError(f"the stub already has section(s) {', '.join(sorted(clash))}")
    table_end = layout.section_table + (layout.section_count + len(sections)) * SECTION_HEADER
    first_data = min((s.raw_pointer for s in layout.sections if s.raw_size), default=layout.size_of_headers)
    if table_end > min(layout.size_of_headers, first_data):
        raise UkiError(f"no room for {len(sections)} more section headers in the stub's {layout.size_of_headers}"
                       "-byte header")
    out = bytearray(image)
    out.extend(b"\0" * (_align(len(out), layout.file_alignment) - len(out)))
    next_address = max(_align(s.virtual_address + max(s.virtual_size, s.raw_size), layout.section_alignment)
                       for s in layout.sections)
    header_at = layout.section_table + layout.section_count * SECTION_HEADER
    for name, data in sections:
        if len(name) > 8:
            raise UkiError(f"section name {name!r} is longer than 8 bytes")
        raw_size = _align(len(data), layout.file_alignment)
        struct.pack_into("<8sIIIIIIHHI", out, header_at, name.encode(), len(data), next_address, raw_size,
                         len(out), 0, 0, 0, 0, READ_ONLY_DATA)
        out.extend(data)
        out.extend(b"\0" * (raw_size - len(data)))
        header_at += SECTION_HEADER
        next_address = _align(next_address + len(data), layout.section_alignment)
    optional = layout.pe_offset + 24
    struct.pack_into("<H", out, layout.pe_offset + 6, layout.section_count + len(sections))
    struct.pack_into("<I", out, optional + 56, next_address)  # SizeOfImage
    struct.pack_into("<I", out, optional + 64, 0)  # CheckSum: not verified by UEFI
    return bytes(out)
