"""Writing the tinyboot ISO: xorriso (host package; what images/recipes/tinyboot.py uses) against pycdlib
(pure Python, from PyPI), side by side in one run on the same staged tree of each arch.

    .venv/bin/pip install -e '.[bench]'   # pycdlib: only this benchmark uses it (make bench installs it)
    .venv/bin/python bench/iso_writers.py [--arch x86_64 ...] [--runs 3] [--boot]

Per arch and writer: seconds to write (median, and min-max over the runs), the ISO's bytes, whether
every run wrote the same bytes, and with --boot whether the cell of matrix/tinyboot.toml boots it to the
app (one TCG boot per ISO and cell).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pycdlib

from arches import ARCHES
from harness.deadline import Deadline
from harness.errors import MachineError
from harness.spec import Disk, MachineSpec
from images.debian.lock import kernel_set
from images.recipes.gosource import build_go_root
from images.recipes.tinyboot import APP, ISO_SETS, build_app, modules_of, stage_iso, write_iso
from images.store import file_sha256
from matrix.lab import Lab
from matrix.model import load_matrix

TINYBOOT_MATRIX = Path(__file__).resolve().parent.parent / "matrix" / "tinyboot.toml"


def iso_name(rel: str, directory: bool) -> str:
    """An ISO 9660 level-3 name for a path of the tree (upper case, no dashes; files get ';1')."""
    parts = [part.upper().replace("-", "_") for part in rel.split("/")]
    return "/" + "/".join(parts) + ("" if directory else ";1")


def with_pycdlib(tree: Path, iso: Path, arch: str) -> None:
    image = pycdlib.PyCdlib()
    image.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="TINYBOOT")
    for path in sorted(tree.rglob("*")):
        rel = path.relative_to(tree).as_posix()
        if path.is_dir():
            image.add_directory(iso_name(rel, True), rr_name=path.name, joliet_path="/" + rel)
        else:
            image.add_file(str(path), iso_name(rel, False), rr_name=path.name, joliet_path="/" + rel)
    # The catalog's sector count is 16 bits of 512-byte sectors: an EFI image over 32 MiB gets 0, as
    # xorriso writes it (the firmware then takes the FAT file system's own size).
    efi_sectors = (tree / "boot/efi.img").stat().st_size // 512
    efi_load = efi_sectors if efi_sectors <= 0xFFFF else 0
    if arch == "x86_64":
        image.add_eltorito(iso_name("isolinux/isolinux.bin", False), iso_name("isolinux/boot.cat", False),
                           boot_load_size=4, boot_info_table=True)
        image.add_eltorito(iso_name("boot/efi.img", False), efi=True, boot_load_size=efi_load)
        image.add_isohybrid(str(tree.parent / "isohdpfx.bin"), efi=True)
    else:
        image.add_eltorito(iso_name("boot/efi.img", False), iso_name("boot/boot.cat", False), efi=True,
                           boot_load_size=efi_load)
    image.write(str(iso))
    image.close()


def with_xorriso(tree: Path, iso: Path, arch: str) -> None:
    write_iso(tree, iso, arch, f"bench ISO for {arch}")


WRITERS = {"xorriso": with_xorriso, "pycdlib": with_pycdlib}


def boots(lab: Lab, arch: str, iso: Path, workdir: Path) -> str:
    cell = next(c for c in load_matrix(TINYBOOT_MATRIX) if c.arch == arch and c.firmware != "seabios")

    def on_our_iso(spec: MachineSpec) -> MachineSpec:
        return replace(spec, disks=(Disk(iso, snapshot=False, interface="scsi-cd", readonly=True),))

    machine, record = lab.machine(cell, workdir, customize=on_our_iso)
    try:
        with machine:
            lab.boot(machine, record, Deadline.after(lab.boot_budget(cell, record.accel)))
        return f"boots ({cell.firmware}, ready {record.milestones.get('ready', 0):.1f} s)"
    except MachineError as error:
        return f"does not boot ({cell.firmware}): {str(error).splitlines()[0]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", choices=list(ARCHES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--boot", action="store_true")
    args = parser.parse_args()
    lab = Lab()
    apps = build_app(lab.store, build_go_root(lab.store, lab.fetcher()))
    print(f"{'arch':8} {'writer':8} {'median s':>9} {'min-max s':>11} {'MiB':>7} {'same bytes':>10}  boot")
    for arch in args.arch or list(ARCHES):
        debs = {name: lab.fetcher().fetch_set(name) for name in (kernel_set(arch), *ISO_SETS)}
        with tempfile.TemporaryDirectory(prefix="bm-isobench-") as tmp:
            staged = stage_iso(Path(tmp), arch, debs, apps / f"linux_{ARCHES[arch].goarch}" / APP, modules_of(arch))
            for writer, write in WRITERS.items():
                seconds, hashes = [], set()
                iso = Path(tmp) / f"{writer}.iso"
                for run in range(args.runs):
                    if run:
                        time.sleep(1.1)  # a writer that stamps the clock's second shows it in "same bytes"
                    iso.unlink(missing_ok=True)
                    started = time.monotonic()
                    write(staged.tree, iso, arch)
                    seconds.append(time.monotonic() - started)
                    hashes.add(file_sha256(iso))
                verdict = boots(lab, arch, iso, Path(tmp) / f"vm-{writer}") if args.boot else "-"
                print(f"{arch:8} {writer:8} {statistics.median(seconds):9.2f} "
                      f"{min(seconds):5.2f}-{max(seconds):<5.2f} {iso.stat().st_size / 2**20:7.1f} "
                      f"{'yes' if len(hashes) == 1 else f'no ({len(hashes)})':>10}  {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
