"""GPT disks written from parts, rootless and the same bytes on every build: sfdisk writes both tables
from a script with fixed GUIDs, then each partition's contents go to its offset. The A/B disk and the
Debian disk are made this way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from images.tools import host_tool, run_tool

MIB = 1 << 20
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_DATA_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


@dataclass(frozen=True)
class Partition:
    number: int
    name: str
    start: int  # bytes
    size: int  # bytes


def mib_layout(sizes: list[tuple[str, int]]) -> list[Partition]:
    """Partitions of (name, MiB) in order, MiB-aligned after the primary GPT's first MiB."""
    partitions, start = [], MIB
    for number, (name, mib) in enumerate(sizes, start=1):
        partitions.append(Partition(number, name, start, mib * MIB))
        start += mib * MIB
    return partitions


def write_gpt(target: Path, what: str, label_id: str, partitions: list[Partition], *, types: dict[str, str],
              uuids: dict[str, str], contents: dict[str, Path], boot_code: bytes | None = None) -> None:
    """The disk `target`: `partitions` with their type and unique GUIDs by name, `contents` by name (a
    partition without contents stays zeros). With `boot_code` (syslinux's gptmbr.bin, for a BIOS) the
    protective MBR runs it and the ESP is marked legacy-BIOS-bootable."""
    end = partitions[-1].start + partitions[-1].size + MIB  # room for the backup GPT
    with target.open("wb") as handle:
        handle.truncate(end)
    lines = ["label: gpt", f"label-id: {label_id}", "unit: sectors", "first-lba: 2048"]
    for part in partitions:
        kind = types[part.name]
        attrs = ', attrs="LegacyBIOSBootable"' if boot_code is not None and kind == ESP_TYPE else ""
        lines.append(f"start={part.start // 512}, size={part.size // 512}, type={kind}, "
                     f"uuid={uuids[part.name]}, name={part.name}{attrs}")
    sfdisk = host_tool("sfdisk", "package fdisk", f"partition the {what}")
    run_tool([sfdisk, "--no-reread", "--no-tell-kernel", "-q", str(target)], f"{what}: sfdisk",
             stdin="\n".join(lines) + "\n")
    with target.open("r+b") as disk:
        if boot_code is not None:
            disk.write(boot_code[:440])  # the code area; the disk signature and partition entry stay sfdisk's
        for part in partitions:
            if part.name in contents:
                source = contents[part.name]
                if source.stat().st_size > part.size:
                    raise ValueError(f"{what}: {source.name} is larger than partition {part.name}")
                disk.seek(part.start)
                with source.open("rb") as data:
                    # The disk is all zeros already: skip zero blocks, so it stays as sparse as its parts.
                    while block := data.read(MIB):
                        if block.count(0) == len(block):
                            disk.seek(len(block), 1)
                        else:
                            disk.write(block)
