"""Writing files into a FAT image: pyfatfs (pure Python, the design card's choice) against mkfs.vfat +
mtools (what images/recipes/fat.py uses), measured side by side in one run on the same workloads.

    .venv/bin/python bench/vfat_writers.py [--small 300] [--stick]

Workloads: many small files (1 KiB each, in 10 folders), and the boot stick's real content (kernels,
initramfs, EFI binaries) when --stick is given and the cache has it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyfatfs.PyFatFS import PyFatFS

IMAGE_MIB = 256


def fresh_image(path: Path) -> None:
    path.unlink(missing_ok=True)
    subprocess.run(["mkfs.vfat", "-C", "-F", "32", "--invariant", str(path), str(IMAGE_MIB * 1024)],
                   check=True, capture_output=True)


def with_pyfatfs(image: Path, files: dict[str, bytes]) -> float:
    fresh_image(image)
    started = time.monotonic()
    fat = PyFatFS(str(image))
    try:
        for rel in sorted(files):
            parent = str(Path(rel).parent)
            if parent != "." and not fat.exists("/" + parent):
                fat.makedirs("/" + parent)
            fat.writebytes("/" + rel, files[rel])
    finally:
        fat.close()
    return time.monotonic() - started


def with_mtools_per_file(image: Path, files: dict[str, bytes], staging: Path) -> float:
    fresh_image(image)
    started = time.monotonic()
    made: set[str] = set()
    for rel in sorted(files):
        parent = str(Path(rel).parent)
        if parent != "." and parent not in made:
            subprocess.run(["mmd", "-i", str(image), "::/" + parent], check=True, capture_output=True)
            made.add(parent)
        subprocess.run(["mcopy", "-i", str(image), str(staging / rel), "::/" + rel], check=True, capture_output=True)
    return time.monotonic() - started


def with_mtools_batch(image: Path, staging: Path) -> float:
    fresh_image(image)
    started = time.monotonic()
    entries = [str(p) for p in sorted(staging.iterdir())]
    subprocess.run(["mcopy", "-s", "-i", str(image), *entries, "::/"], check=True, capture_output=True)
    return time.monotonic() - started


def files_in(image: Path) -> int:
    """How many files the image holds, as mtools lists them: each timing is checked to have written all."""
    listing = subprocess.run(["mdir", "-/", "-b", "-i", str(image), "::/"], check=True, capture_output=True, text=True)
    return sum(1 for line in listing.stdout.splitlines() if line and not line.endswith("/"))


def stage(files: dict[str, bytes], root: Path) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def stick_content() -> dict[str, bytes]:
    from arches import NAMES as ARCHES
    from images.recipes.stick import stick_files  # noqa: F401 - layout reference only
    from matrix.lab import Lab

    lab = Lab()
    files: dict[str, bytes] = {}
    for arch in ARCHES:
        image = lab.image(arch)
        files[f"{arch}/linux"] = image.kernel.read_bytes()
        files[f"{arch}/initrd"] = image.initrd.read_bytes()
    return files


def run(name: str, files: dict[str, bytes]) -> None:
    size_mb = sum(map(len, files.values())) / 1e6
    with tempfile.TemporaryDirectory(prefix="bm-vfat-") as tmp:
        staging = Path(tmp) / "staging"
        stage(files, staging)
        image = Path(tmp) / "fat.img"
        writers = {
            "pyfatfs": lambda: with_pyfatfs(image, files),
            "mtools, one mcopy per file": lambda: with_mtools_per_file(image, files, staging),
            "mtools, one mcopy -s": lambda: with_mtools_batch(image, staging),
        }
        timings = {}
        for method, write in writers.items():
            timings[method] = write()
            written = files_in(image)
            if written != len(files):
                raise SystemExit(f"{method} wrote {written} of {len(files)} files")
    fastest = min(timings.values())
    print(f"\n{name}: {len(files)} files, {size_mb:.1f} MB")
    for method, seconds in timings.items():
        print(f"  {method:28} {seconds:8.2f} s  {len(files) / seconds:8.0f} files/s  {size_mb / seconds:7.1f} MB/s"
              f"  x{seconds / fastest:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=300, help="number of 1 KiB files")
    parser.add_argument("--stick", action="store_true", help="also the stick's kernels and initramfs")
    args = parser.parse_args()
    small = {f"d{i % 10}/f{i:05d}.txt": os.urandom(1024) for i in range(args.small)}
    run("small files", small)
    if args.stick:
        run("stick content", stick_content())
    return 0


if __name__ == "__main__":
    sys.exit(main())
