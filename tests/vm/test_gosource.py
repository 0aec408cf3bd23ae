"""Groundwork of the mostly-source image (issue 5): the multi-arch Go root is mostly source, and the
warm cache built on the host is used as it is by a guest of each arch: its first `go build` of a new
command compiles only that command."""

from __future__ import annotations

import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness.deadline import Deadline
from images.cpio import CpioArchive, read_newc
from images.debian.lock import GUEST_DEBIAN_ARCH
from images.recipes.gosource import BUILD_ENV, GoRoot, build_go_root
from matrix.lab import Lab
from matrix.model import Cell

pytestmark = pytest.mark.vm
ELF = b"\x7fELF"

HELLO = '''package main

import (
	"crypto/sha256"
	"fmt"
	"os"
)

func main() { fmt.Printf("%x %d\\n", sha256.Sum256([]byte("bootmatrix")), len(os.Args)) }
'''


@pytest.fixture(scope="module")
def go_root(bootmatrix_lab: Lab) -> GoRoot:
    return build_go_root(bootmatrix_lab.store, bootmatrix_lab.fetcher())


def test_the_root_is_mostly_source(go_root: GoRoot, record_property) -> None:  # type: ignore[no-untyped-def]
    source_tree = [p for p in go_root.files() if "src" in p.relative_to(go_root.root).parts]
    go_files = sum(1 for p in source_tree if p.suffix == ".go")
    binaries: dict[str, int] = {}
    for path in go_root.files():
        if "gocache" in path.parts or path in source_tree:
            continue  # cached objects, and the race .syso objects and test data of the source, are not programs
        with path.open("rb") as handle:
            if handle.read(4) == ELF:
                arch = next((part for part in path.parts if part.startswith("linux_")), path.parent.name)
                binaries[arch] = binaries.get(arch, 0) + 1
    record_property("source_tree_files", len(source_tree))
    record_property("go_files", go_files)
    record_property("binaries_per_arch", binaries)
    # Source files: everything in the source tree (Go, assembly, C headers, tests, test data, docs).
    assert len(source_tree) >= 10_000 and go_files >= 7_000
    assert set(binaries) == {f"linux_{a}" for a in GUEST_DEBIAN_ARCH.values()}
    assert all(count <= 15 for count in binaries.values()), binaries


def _initramfs_with_go(base: Path, go_root: GoRoot, goarch: str, target: Path) -> None:
    """The minimal image's initramfs plus this arch's part of the Go root and a small module."""
    archive = CpioArchive()
    for entry in read_newc(base.read_bytes()):
        archive._add(entry)
    for path in sorted(go_root.root.rglob("*")):
        rel = path.relative_to(go_root.root).as_posix()
        other_arch = any(f"linux_{a}" in rel and a != goarch for a in GUEST_DEBIAN_ARCH.values())
        if other_arch or "/testdata/" in f"/{rel}/" or rel.endswith("_test.go") or path.is_dir():
            continue
        archive.add_file(rel, path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    archive.add_file("hello/go.mod", b"module hello\n\ngo 1.24\n")
    archive.add_file("hello/main.go", HELLO.encode())
    archive.write(target)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64", "riscv64"])
def test_host_built_cache_serves_the_guest(  # type: ignore[no-untyped-def]  # noqa: PLR0917 - pytest fixtures
    bootmatrix_vms, bootmatrix_lab: Lab, go_root: GoRoot, tmp_path: Path, arch: str, record_property
) -> None:
    goarch = GUEST_DEBIAN_ARCH[arch]
    firmware = {"x86_64": "seabios", "aarch64": "virt", "riscv64": "opensbi"}[arch]
    cell = Cell(arch=arch, firmware=firmware, memory_mib=2048, smp=2)  # type: ignore[arg-type]
    initrd = tmp_path / "go-initramfs.cpio"
    _initramfs_with_go(bootmatrix_lab.image(arch).initrd, go_root, goarch, initrd)
    guest = bootmatrix_vms(cell, customize=lambda spec: replace(spec, initrd=initrd))
    env = " ".join(f"{k}={v}" for k, v in BUILD_ENV.items())
    setup = (f"export PATH=/linux_{goarch}/bin:$PATH GOROOT=/go GOCACHE=/tmp/gocache GOPATH=/tmp/gopath "
             f"HOME=/tmp {env} && cp -a /gocache/linux_{goarch} /tmp/gocache && go version")
    output, code = guest.console.run(setup, Deadline.after(300))
    assert code == 0 and f"linux/{goarch}" in output, output
    started = time.monotonic()
    output, code = guest.console.run("cd /hello && go build -x -o /tmp/hello . > /tmp/build.log 2>&1",
                                     Deadline.after(600))
    seconds = time.monotonic() - started
    record_property("first_build_seconds", round(seconds, 2))
    guest.metric("go_first_build_s", seconds, "s")
    if code != 0:
        log, _ = guest.console.run("tail -20 /tmp/build.log", Deadline.after(30))
        pytest.fail(f"go build failed ({code}):\n{log}")
    count, _ = guest.console.run(f"grep -c 'pkg/tool/linux_{goarch}/compile' /tmp/build.log", Deadline.after(30))
    record_property("first_build_compiles", int(count))
    assert int(count) == 1, f"expected only the command itself to compile, not {count} packages"
    ran, code = guest.console.run("/tmp/hello a", Deadline.after(60))
    assert code == 0 and ran.endswith(" 2") and len(ran.split()[0]) == 64, ran
