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
from images.recipes.gosource import (
    BUILD_ENV,
    BUILDER,
    GoRoot,
    build_go_root,
    build_programs,
    command_names,
    guest_sources,
    stub,
)
from matrix.lab import Lab
from matrix.profiles import direct_cell

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


def _initramfs_with_go(base: Path, go_root: GoRoot, goarch: str, target: Path, programs: Path | None = None) -> None:
    """The minimal image's initramfs plus this arch's part of the Go root and a small module; with
    `programs`, also the builder, the command sources under /src and their stubs under /ubin."""
    archive = CpioArchive()
    if programs is not None:
        builder = programs / f"linux_{goarch}/bin/{BUILDER}"
        archive.add_file(f"linux_{goarch}/bin/{BUILDER}", builder.read_bytes(), 0o755)
        for rel, data in guest_sources().items():
            archive.add_file(f"src/{rel}", data)
        for command in command_names():
            archive.add_file(f"ubin/{command}", stub(command), 0o755)
    for entry in read_newc(base.read_bytes()):
        archive.add_entry(entry)
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
    cell = direct_cell(arch, memory_mib=2048, smp=2)
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


# command -> (arguments, a busybox command whose output must be the same)
FIRST_CALLS = {
    "uname": ("", "echo $(busybox uname -s) $(busybox uname -r) $(busybox uname -m)"),
    "cat": ("/etc/modules-load", "busybox cat /etc/modules-load"),
    "sha256sum": ("/init", "busybox sha256sum /init"),
    "ls": ("/etc", "busybox ls -1 /etc"),
    "wc": ("/init", "echo $(busybox wc -l < /init) $(busybox wc -w < /init) $(busybox wc -c < /init) /init"),
}


@pytest.mark.parametrize("arch", ["x86_64", "aarch64", "riscv64"])
def test_commands_build_on_first_call_then_run_at_once(  # type: ignore[no-untyped-def]  # noqa: PLR0917 - fixtures
    bootmatrix_vms, bootmatrix_lab: Lab, go_root: GoRoot, tmp_path: Path, arch: str, record_property
) -> None:
    goarch = GUEST_DEBIAN_ARCH[arch]
    programs = build_programs(bootmatrix_lab.store, go_root)
    cell = direct_cell(arch, memory_mib=2048, smp=2)
    initrd = tmp_path / "go-initramfs.cpio"
    _initramfs_with_go(bootmatrix_lab.image(arch).initrd, go_root, goarch, initrd, programs)
    guest = bootmatrix_vms(cell, customize=lambda spec: replace(spec, initrd=initrd))
    run = lambda command, seconds=600: guest.console.run(command, Deadline.after(seconds))  # noqa: E731
    output, code = run(f"mkdir -p /run/bm && ln -s /linux_{goarch}/bin /run/bm/bin && "
                       f"cp -a /gocache/linux_{goarch} /run/bm/gocache && export BMBUILD_VERBOSE=1")
    assert code == 0, output
    timings = {}
    for command, (arguments, reference) in FIRST_CALLS.items():
        expected, code = run(reference)
        assert code == 0, expected
        started = time.monotonic()
        # By path: busybox's shell runs its own applets (uname, cat, ls...) before searching PATH.
        first, code = run(f"/ubin/{command} {arguments} 2>/tmp/{command}.err; cat /tmp/{command}.err")
        timings[command] = round(time.monotonic() - started, 2)
        assert code == 0, first
        assert first.startswith(expected) and f"bmbuild: built {command} in" in first, (first, expected)
        inode, _ = run(f"busybox stat -c %i /run/bm/cache/bin/{command}")
        second, code = run(f"/ubin/{command} {arguments} 2>/tmp/{command}.err2; cat /tmp/{command}.err2")
        assert code == 0 and second == expected, (second, expected)  # no "built" line: not rebuilt
        assert run(f"busybox stat -c %i /run/bm/cache/bin/{command}")[0] == inode  # the same binary
        guest.metric(f"first_call_{command}_s", timings[command], "s")
    record_property("first_call_seconds", timings)

    # A command whose source does not compile: the compiler's error and a non-zero exit.
    output, code = run("mkdir -p /src/cmds/broken && printf 'package main\\nfunc main() { undefinedThing() }\\n' "
                       "> /src/cmds/broken/main.go && printf '#!/run/bm/bin/bmbuild /src/cmds/broken\\n' > "
                       "/ubin/broken && chmod +x /ubin/broken && /ubin/broken")
    assert code == 2 and "undefined: undefinedThing" in output, output

    # Two shells calling a new command at once build it once.
    output, code = run("busybox cp -r /src/cmds/cat /src/cmds/twice && busybox sed 's,cmds/cat,cmds/twice,' "
                       "/ubin/cat > /ubin/twice && chmod +x /ubin/twice && "
                       "(/ubin/twice /etc/modules-load 2>/tmp/t1 & /ubin/twice /etc/modules-load 2>/tmp/t2 & wait) "
                       ">/dev/null; "
                       "busybox cat /tmp/t1 /tmp/t2 | busybox grep -c 'bmbuild: built twice'")
    assert (output, code) == ("1", 0), output
