"""FAT32 file systems written rootless and bit-identical from build to build, for every recipe that
boots from one: the boot stick, the mostly-source stick and the ESP of the A/B and Debian disks.

mkfs.vfat runs with --invariant (fixed volume id 1234-ABCD and times); directories are made and files
copied in sorted order through mtools, which stamps every file with SOURCE_DATE_EPOCH in UTC. syslinux's
installer writes through mtools too, so it gets the same environment. The recipes that call this module
hash it into their inputs (images.store.code_sha256): a change to how a FAT is written rebuilds them.
"""

from __future__ import annotations

import os
from pathlib import Path

from images.store import scratch_dir
from images.tools import host_tool, run_tool

EPOCH = 946684800  # 2000-01-01: FAT cannot store times before 1980
SECTOR = 512


def _tool(name: str) -> str:
    return host_tool(name, "packages dosfstools and mtools", "write a FAT file system")


def mtools_env() -> dict[str, str]:
    """The environment of every mtools call (syslinux's installer makes them too): files stamped with
    SOURCE_DATE_EPOCH in UTC, whatever the host's clock and zone, and no check of the image's geometry
    (a partition image has no disk geometry to match)."""
    return {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}


def install_syslinux(tools: Path, fat: Path, what: str) -> None:
    """syslinux into /syslinux of the FAT file system `fat` (a file, rootless: syslinux writes through
    mtools); ldlinux.sys lands there and the boot sector is patched to load it."""
    run_tool([str(tools / "usr/bin/syslinux"), "--install", "--directory", "/syslinux", str(fat)],
             what, env=mtools_env())


def _stage(files: dict[str, bytes | Path], staging: Path) -> dict[str, list[Path]]:
    """The host file mcopy copies for each FAT path, grouped by FAT directory. mcopy keeps the source's
    base name, so bytes, and files whose name differs, are written to `staging` first."""
    by_directory: dict[str, list[Path]] = {}
    for rel in sorted(files):
        data = files[rel]
        if isinstance(data, Path) and data.name == Path(rel).name:
            source = data
        else:
            source = staging / rel
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_bytes(data.read_bytes() if isinstance(data, Path) else data)
        by_directory.setdefault(str(Path(rel).parent), []).append(source)
    return by_directory


def file_size(data: bytes | Path) -> int:
    """Bytes of a FAT file given as bytes or as a host file."""
    return data.stat().st_size if isinstance(data, Path) else len(data)


def fat_size_mib(files: dict[str, bytes | Path], spare_mib: int = 48) -> int:
    """A FAT32 partition's size for `files`: at most 4 KiB clusters each, 1/8 more for the FATs and
    directories, `spare_mib` free, and FAT32's minimum of 33 MiB (rounded up to 64)."""
    payload = sum(-(-file_size(data) // 4096) * 4096 for data in files.values())
    return max(64, (payload * 9 // 8) // (1 << 20) + spare_mib)


def write_fat(part: Path, files: dict[str, bytes | Path], size_mib: int, label: str,
              directories: tuple[str, ...] = ()) -> None:
    """A FAT32 file system of `size_mib` in the file `part`, holding `files` by path (bytes, or a host
    file to copy) and the empty `directories`. One mmd call makes every directory and one mcopy call per
    directory copies its files, in sorted order, so the layout is the same from build to build."""
    # FAT32 needs at least 65,525 clusters: one-sector clusters for a small stick, 4 KiB for a large one
    # (fewer FAT sectors and directory reads for the 15,000 files of the mostly-source root).
    cluster = 4096 if size_mib * (1 << 20) // 4096 >= 66_000 else SECTOR
    env = mtools_env()
    run_tool(
        [_tool("mkfs.vfat"), "-C", "-F", "32", "-s", str(cluster // SECTOR), "-n", label, "--invariant",
         str(part), str(size_mib * 1024)],
        f"formatting {part.name}", env=env,
    )
    with scratch_dir("fat") as tmp:
        by_directory = _stage(files, Path(tmp) / "files")
        wanted = set(directories)
        for directory in [*by_directory, *directories]:
            parts = Path(directory).parts if directory != "." else ()
            wanted.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
        if wanted:
            run_tool([_tool("mmd"), "-i", str(part), *(f"::/{d}" for d in sorted(wanted))],
                     f"making the directories of {part.name}", env=env)
        for directory, sources in sorted(by_directory.items()):
            # No -m: mtools stamps every file with SOURCE_DATE_EPOCH instead of the host file's time.
            destination = "::/" if directory == "." else f"::/{directory}/"
            run_tool([_tool("mcopy"), "-i", str(part), *map(str, sources), destination],
                     f"copying files to {destination} of {part.name}", env=env)
