"""Build the Debian root of each arch from scratch, twice, in empty stores (only the verified .debs are
shared): the wall time of each build, the peak memory of the process tree (QEMU of the build VM is
the largest), the image sizes, and whether the second build's bytes are the first's (root filesystem,
kernel, initrd and the whole disk, by sha256). Builds run one after another, so each has the host to
itself.

    .venv/bin/python bench/debian_build.py [--arch x86_64] [--builds 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from images.debian.fetch import share_downloads
from images.store import Store, file_sha256


def build_once(arch: str, root: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """In a child process of its own, so its peak RSS (and its children's: the build VM's QEMU) is its own."""
    from matrix.lab import Lab

    lab = Lab(Store(Path(root)))
    lab.qemu("pinned")
    lab.firmware("trixie")
    lab.image(arch)  # the pinned QEMU, firmware and the builder's own kernel are not the Debian build
    started = time.monotonic()
    disk = lab.debian_disk(arch)
    seconds = time.monotonic() - started
    peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    files = {"root.img": disk.root.root, "kernel": disk.root.kernel, "initrd": disk.root.initrd, "disk.img": disk.disk}
    queue.put({"seconds": seconds, "peak_mib": peak_kib / 1024, "packages": disk.root.packages,
               "sha256": {name: file_sha256(path) for name, path in files.items()},
               "bytes": {name: path.stat().st_size for name, path in files.items()},
               "allocated": {name: path.stat().st_blocks * 512 for name, path in files.items()}})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", action="append", default=[])
    parser.add_argument("--builds", type=int, default=2)
    args = parser.parse_args()
    cache = Store().root
    for arch in args.arch or ["x86_64", "aarch64", "riscv64"]:
        results = []
        for number in range(args.builds):
            root = Path(tempfile.mkdtemp(prefix=f"bench-debian-{arch}-{number}-"))
            try:
                share_downloads(cache, root)
                queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
                child = multiprocessing.get_context("fork").Process(target=build_once, args=(arch, str(root), queue))
                child.start()
                results.append(queue.get())
                child.join()
            finally:
                shutil.rmtree(root, ignore_errors=True)
        first = results[0]
        same = all(r["sha256"] == first["sha256"] for r in results)
        times = [r["seconds"] for r in results]
        peaks = [r["peak_mib"] for r in results]
        print(f"{arch}: {len(results)} builds, {min(times):.0f}-{max(times):.0f} s, peak RSS {min(peaks):.0f}-"
              f"{max(peaks):.0f} MiB, {first['packages']} packages, "
              + ", ".join(f"{name} {size / 2**20:.0f} MiB ({first['allocated'][name] / 2**20:.0f} allocated)"
                          for name, size in first["bytes"].items())
              + f"; bit-identical: {'yes' if same else 'NO'}")
        if not same:
            print(json.dumps([r["sha256"] for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
