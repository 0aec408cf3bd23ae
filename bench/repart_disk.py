"""The Debian disk two ways from the same parts: our recipe (images/recipes/debian_disk.py: mtools for the
ESP, gpt.py for the table) against Debian 13's systemd-repart (locked as `repart-host-<arch>`, unpacked
and started through its own loader, as the pinned QEMU is). Both get the Debian root's filesystem,
kernel and initrd and the same ESP files; the runs alternate, in one process.

    .venv/bin/python bench/repart_disk.py [--arch x86_64] [--runs 3]

For each it prints the wall time (median, min-max), whether every run gave the same bytes, the disk's
size and what it takes on the host's disk, and whether the BIOS path (syslinux from the protective MBR)
is there. It checks that repart's disk holds the same ESP files and the root filesystem block for block,
and tries the host's own systemd-repart (Debian 12's 252) the same way, rootless, for its error.

repart runs unprivileged: as the calling user, or as nobody when that is root (its folder is then given
to nobody, as a user's own files are theirs). Our recipe runs in an empty store each time (its debs
shared), so its time includes unpacking syslinux and systemd-boot, as a real build's does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from images.debian.extract import extract_deb
from images.debian.fetch import DebianFetcher, share_downloads
from images.debian.lock import STICK_TOOLS_SET, Lockfile, repart_set
from images.recipes.debian import DebianRoot, fixed_uuid
from images.recipes.debian_disk import build_debian_disk, esp_files
from images.recipes.esp import SPARE_MIB
from images.recipes.fat import EPOCH, fat_size_mib
from images.recipes.stick import stick_tools
from images.store import Store, file_sha256
from matrix.lab import Lab

NOBODY = 65534
# systemd's names for the arch (--architecture), which picks the root partition's type.
SYSTEMD_ARCH = {"x86_64": "x86-64", "aarch64": "arm64", "riscv64": "riscv64"}
# What systemd-repart 257 runs to make and fill a vfat and an ext4 file system.
REPART_TOOLS = {"mkfs.vfat": "usr/sbin/mkfs.fat", "mkfs.fat": "usr/sbin/mkfs.fat", "mkfs.ext4": "usr/sbin/mke2fs",
                "mke2fs": "usr/sbin/mke2fs", "mcopy": "usr/bin/mtools", "mmd": "usr/bin/mtools"}
MIB = 1 << 20


@dataclass
class Disk:
    seconds: float
    sha256: str
    path: Path


def loader_wrapper(prefix: Path, binary: str, name: str) -> str:
    """A script that starts `binary` of the unpacked prefix through the prefix's own loader and libraries
    (the host's C library is older than Debian 13's)."""
    libs = prefix / "usr/lib" / f"{platform.machine()}-linux-gnu"
    loader = next(libs.glob("ld-linux*.so.*"))
    library_path = ":".join(str(d) for d in (libs, libs / "systemd", libs / "e2fsprogs") if d.is_dir())
    return f'#!/bin/sh\nexec {loader} --library-path {library_path} --argv0 {name} {prefix / binary} "$@"\n'


def unpack_repart(fetcher: DebianFetcher, work: Path) -> Path:
    """Debian 13's systemd-repart and its tools unpacked under `work`, with a bin folder of wrappers."""
    prefix = work / "repart-prefix"
    for _, deb in fetcher.fetch_set(repart_set()):
        extract_deb(deb, prefix)
    bin_dir = work / "repart-bin"
    bin_dir.mkdir()
    for name, binary in {"systemd-repart": "usr/bin/systemd-repart", **REPART_TOOLS}.items():
        (bin_dir / name).write_text(loader_wrapper(prefix, binary, name))
        (bin_dir / name).chmod(0o755)
    return bin_dir


def definitions(arch: str, folder: Path, esp_tree: Path, esp_mib: int, root_img: Path) -> Path:
    """repart's partition files for the disk debian_disk.py writes: the ESP filled from a tree, the root
    partition the root filesystem block for block, with the recipe's fixed partition UUIDs."""
    folder.mkdir()
    (folder / "10-esp.conf").write_text(
        f"[Partition]\nType=esp\nUUID={fixed_uuid(arch, 'esp')}\nFormat=vfat\nCopyFiles={esp_tree}:/\n"
        f"SizeMinBytes={esp_mib}M\nSizeMaxBytes={esp_mib}M\n")
    (folder / "20-root.conf").write_text(
        f"[Partition]\nType=root\nUUID={fixed_uuid(arch, 'root')}\nCopyBlocks={root_img}\n")
    return folder


def stage_esp(files: dict[str, bytes | Path], tree: Path) -> None:
    """The ESP's files as a tree for CopyFiles=, every time clamped to EPOCH: repart's mcopy keeps a
    source's modification time (-m), so a tree written at build time would stamp the build's time."""
    for rel, data in sorted(files.items()):
        target = tree / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.read_bytes() if isinstance(data, Path) else data)
    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (EPOCH, EPOCH))


def unprivileged() -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if os.geteuid() == 0 else []


def give_away(path: Path) -> None:
    """The folder repart reads and writes, owned by the user it runs as (repart keeps a copied file's
    owner, which an unprivileged process can only do for its own files)."""
    if os.geteuid() != 0:
        return
    for folder, dirs, files in os.walk(path):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.lchown(name, NOBODY, NOBODY)


def repart_argv(repart: str, defs: Path, arch: str, target: Path) -> list[str]:
    return [*unprivileged(), repart, "--offline=yes", "--empty=create", "--size=auto", f"--definitions={defs}",
            f"--seed={fixed_uuid(arch, 'disk')}", f"--architecture={SYSTEMD_ARCH[arch]}", "--sector-size=512",
            "--dry-run=no", str(target)]


def repart_env(bin_dir: Path, arch: str) -> dict[str, str]:
    """Times from SOURCE_DATE_EPOCH (mkfs.fat, mtools, mke2fs), and ext4's hash seed fixed for when
    repart formats an ext4 itself (not here, where the root is copied block for block): repart 257
    passes mke2fs none, so such a superblock differs from run to run."""
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "SOURCE_DATE_EPOCH": str(EPOCH),
            "TZ": "UTC", "SYSTEMD_REPART_MKFS_OPTIONS_EXT4": f"-E hash_seed={fixed_uuid(arch, 'ext4-hash')}"}


def with_repart(bin_dir: Path, defs: Path, arch: str, target: Path) -> Disk:
    target.unlink(missing_ok=True)
    started = time.monotonic()
    done = subprocess.run(repart_argv(str(bin_dir / "systemd-repart"), defs, arch, target),
                          env=repart_env(bin_dir, arch), capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"systemd-repart failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return Disk(seconds, file_sha256(target), target)


def with_recipe(cache: Path, work: Path, root: DebianRoot, number: int) -> Disk:
    store_root = work / f"store-{number}"
    share_downloads(cache, store_root)
    started = time.monotonic()
    disk = build_debian_disk(Store(store_root), DebianFetcher(store_root, Lockfile.load()), root)
    seconds = time.monotonic() - started
    return Disk(seconds, file_sha256(disk.disk), disk.disk)


def partitions(disk: Path) -> list[dict[str, object]]:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True,
                                      check=True).stdout)
    found: list[dict[str, object]] = table["partitiontable"]["partitions"]
    return found


def region_sha256(disk: Path, start: int, length: int) -> str:
    digest = hashlib.sha256()
    with disk.open("rb") as handle:
        handle.seek(start)
        left = length
        while left:
            chunk = handle.read(min(left, MIB))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def same_content(disk: Path, esp_tree: Path, root_img: Path, out: Path, bin_dir: Path) -> list[str]:
    """What differs between repart's disk and the parts it was given: the ESP's files (read back through
    Debian 13's mtools, as repart wrote them) and the root partition's first bytes, as many as the root
    filesystem has."""
    esp, root = partitions(disk)[:2]
    problems = []
    size = root_img.stat().st_size
    if region_sha256(disk, int(str(root["start"])) * 512, size) != file_sha256(root_img):
        problems.append("the root partition is not the root filesystem")
    out.mkdir()
    esp_at = int(str(esp["start"])) * 512
    read = subprocess.run([str(bin_dir / "mcopy"), "-s", "-n", "-i", f"{disk}@@{esp_at}", "::/*", str(out)],
                          capture_output=True, text=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}, check=False)
    if read.returncode != 0:
        return [f"the ESP could not be read back: {read.stderr.strip()}"]
    given = {p.relative_to(esp_tree) for p in esp_tree.rglob("*") if p.is_file()}
    found = {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    if {str(p).lower() for p in given} != {str(p).lower() for p in found}:
        problems.append(f"the ESP's files differ: {sorted(map(str, given ^ found))}")
    else:
        by_lower = {str(p).lower(): p for p in found}
        problems += [f"ESP file {p} differs" for p in given
                     if (esp_tree / p).read_bytes() != (out / by_lower[str(p).lower()]).read_bytes()]
    return problems


def bios_path(disk: Path) -> bool:
    """Boot code in the protective MBR (gptmbr.bin), which is what SeaBIOS runs."""
    with disk.open("rb") as handle:
        return any(handle.read(440))


def host_repart_refusal(defs: Path, arch: str, target: Path) -> str:
    """The host's systemd-repart (252) run the same way, rootless: what it says (it has no --offline)."""
    if not shutil.which("systemd-repart"):
        return "not installed"
    # 252 has none of --offline, --sector-size and --architecture (Type=root is then the host's arch).
    argv = [a for a in repart_argv("systemd-repart", defs, arch, target)
            if not a.startswith(("--offline=", "--sector-size=", "--architecture="))]
    done = subprocess.run(argv, env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}, capture_output=True, text=True,
                          check=False)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    failed = next((line for line in lines if "fail" in line.lower() or "denied" in line.lower()), None)
    if failed is None and target.exists():
        return "made a disk"
    return failed or (lines[-1] if lines else f"exit {done.returncode}")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="x86_64", choices=sorted(SYSTEMD_ARCH))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    arch = args.arch
    lab = Lab()
    root = lab.debian_root(arch)  # built (minutes under TCG) or taken from the cache
    fetcher = lab.fetcher()
    work = Path(tempfile.mkdtemp(prefix="bench-repart-"))
    try:
        work.chmod(0o755)
        bin_dir = unpack_repart(fetcher, work)
        given = work / "given"  # what repart reads: copies, as the cache may be unreadable to nobody
        given.mkdir()
        root_img = given / "root.img"
        subprocess.run(["cp", "--sparse=always", str(root.root), str(root_img)], check=True)
        with stick_tools(fetcher.fetch_set(STICK_TOOLS_SET)) as tools:
            files = esp_files(arch, root, tools)
            esp_mib = fat_size_mib(files, spare_mib=SPARE_MIB)
            stage_esp(files, given / "esp")
        defs = definitions(arch, given / "repart.d", given / "esp", esp_mib, root_img)
        out = work / "out"
        out.mkdir()
        give_away(given)
        give_away(out)
        ours: list[Disk] = []
        theirs: list[Disk] = []
        for number in range(args.runs):
            ours.append(with_recipe(lab.store.root, work, root, number))
            theirs.append(with_repart(bin_dir, defs, arch, out / f"repart-{number}.img"))
        problems = same_content(theirs[-1].path, given / "esp", root_img, work / "esp-read-back", bin_dir)
        for name, disks in (("our recipe", ours), ("systemd-repart 257", theirs)):
            disk = disks[-1].path
            print(f"{arch} {name}: {spread([d.seconds for d in disks])} over {len(disks)} runs; "
                  f"same bytes every run: {'yes' if len({d.sha256 for d in disks}) == 1 else 'NO'} "
                  f"(sha256 {disks[-1].sha256[:12]}); "
                  f"{disk.stat().st_size / MIB:.0f} MiB ({disk.stat().st_blocks * 512 / MIB:.0f} allocated); "
                  f"BIOS path: {'yes' if bios_path(disk) else 'no'}")
        print(f"{arch} systemd-repart's disk holds the same ESP files and root filesystem: "
              + ("yes" if not problems else "NO: " + "; ".join(problems)))
        print(f"{arch} host systemd-repart (252), rootless: {host_repart_refusal(defs, arch, out / 'host.img')}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
