"""Groundwork of the mostly-source image: one Go root for all three arches, with warm build caches.

Layout of the store entry (the names the guest will see):
    go/                       GOROOT: VERSION, go.env, src/ (Debian's golang-1.24-src), pkg/include/,
                              pkg/tool/linux_<goarch>/{compile,link,asm,buildid} for every arch
    linux_<goarch>/bin/go     the go command of each arch
    gocache/linux_<goarch>/   a warm GOCACHE per arch

The warm caches are cross-built on the host by the host's own go from this very tree (GOARCH=<arch>,
CGO_ENABLED=0, -trimpath), and a guest reuses them as they are: for a release toolchain Go keys its cache
on the tool's version line ("compile version go1.24.4"), not on the binary, and with -trimpath not on
the GOROOT path. Measured (riscv64 guest, QEMU 10, 2 vCPUs, TCG): first `go build` of a small command
88.7 s and 55 compiles with an empty cache, 2.7 s and 0 compiles with the host-built one; natively on the
host the cold build took 4.6 s. tests/vm/test_gosource.py keeps this true.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from images.debian.apt import host_debian_arch
from images.debian.extract import extract_deb
from images.debian.fetch import DebianFetcher
from images.debian.lock import GO_SRC_SET, GO_VERSION, GUEST_DEBIAN_ARCH, go_set
from images.store import Store

RECIPE_VERSION = 1
GO_TOOLS = ("compile", "link", "asm", "buildid")  # all `go build` runs with CGO_ENABLED=0
# What the warm caches hold: the standard-library packages small system commands use, and their deps.
WARM_PACKAGES = (
    "bufio", "bytes", "crypto/sha256", "encoding/hex", "encoding/json", "errors", "flag", "fmt", "io", "io/fs",
    "net", "net/http", "os", "os/exec", "os/signal", "path/filepath", "regexp", "sort", "strconv", "strings",
    "syscall", "text/tabwriter", "time",
)
BUILD_ENV = {"CGO_ENABLED": "0", "GOFLAGS": "-trimpath", "GOTOOLCHAIN": "local", "GOOS": "linux"}


@dataclass(frozen=True)
class GoRoot:
    root: Path  # the store entry's content folder

    @property
    def goroot(self) -> Path:
        return self.root / "go"

    def go(self, goarch: str) -> Path:
        return self.root / f"linux_{goarch}/bin/go"

    def cache(self, goarch: str) -> Path:
        return self.root / f"gocache/linux_{goarch}"

    def files(self) -> Iterator[Path]:
        return (p for p in self.root.rglob("*") if p.is_file() and not p.is_symlink())


def go_environment(goroot: Path, goarch: str, cache: Path, home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GOROOT": str(goroot), "GOARCH": goarch,
            "GOCACHE": str(cache), "GOPATH": str(home / "gopath"), "HOME": str(home), **BUILD_ENV}


def build_go_root(store: Store, fetcher: DebianFetcher) -> GoRoot:
    toolchains = {arch: fetcher.fetch_set(go_set(arch))[0] for arch in GUEST_DEBIAN_ARCH}
    (source_pkg, source_deb), = fetcher.fetch_set(GO_SRC_SET)
    inputs = {
        "recipe_version": RECIPE_VERSION,
        "toolchains": {arch: package.sha256 for arch, (package, _) in sorted(toolchains.items())},
        "source": source_pkg.sha256,
        "tools": list(GO_TOOLS),
        "warm": list(WARM_PACKAGES),
        "env": BUILD_ENV,
    }
    lib = f"usr/lib/go-{GO_VERSION}"
    share = f"usr/share/go-{GO_VERSION}"

    def build(content: Path) -> None:
        goroot = content / "go"
        with tempfile.TemporaryDirectory(prefix="bm-go-") as tmp:
            scratch = Path(tmp)
            extract_deb(source_deb, scratch / "src", lambda p: p.startswith(f"{share}/src/"))
            shutil.move(scratch / "src" / share / "src", goroot / "src")
            for guest_arch, (_, deb) in sorted(toolchains.items()):
                goarch = GUEST_DEBIAN_ARCH[guest_arch]
                unpacked = scratch / goarch
                extract_deb(deb, unpacked)
                tools = goroot / f"pkg/tool/linux_{goarch}"
                tools.mkdir(parents=True)
                for tool in GO_TOOLS:
                    shutil.copy2(unpacked / lib / f"pkg/tool/linux_{goarch}/{tool}", tools / tool)
                (content / f"linux_{goarch}/bin").mkdir(parents=True)
                shutil.copy2(unpacked / lib / "bin/go", content / f"linux_{goarch}/bin/go")
                if not (goroot / "pkg/include").exists():
                    shutil.copytree(unpacked / share / "pkg/include", goroot / "pkg/include")
                    for name in ("VERSION", "go.env"):
                        shutil.copy2(unpacked / lib / name, goroot / name)
            host_go = content / f"linux_{host_debian_arch()}/bin/go"
            for guest_arch in sorted(toolchains):
                goarch = GUEST_DEBIAN_ARCH[guest_arch]
                env = go_environment(goroot, goarch, content / f"gocache/linux_{goarch}", scratch / "home")
                done = subprocess.run([str(host_go), "build", *WARM_PACKAGES], env=env, capture_output=True,
                                      text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"warming the {goarch} Go cache failed: {done.stderr.strip()[-1000:]}")

    return GoRoot(store.get(f"go-root-{GO_VERSION}", inputs, build))


GUEST_GO = Path(__file__).parent.parent / "guest" / "go"
BUILDER = "bmbuild"
STUB_INTERPRETER = "/run/bm/bin/bmbuild"  # /run/bm/bin -> /linux_<goarch>/bin, made on tmpfs at boot


def guest_sources() -> dict[str, bytes]:
    """The project's guest-side Go tree (go.mod, the builder, the commands), by path below /src."""
    return {p.relative_to(GUEST_GO).as_posix(): p.read_bytes() for p in sorted(GUEST_GO.rglob("*")) if p.is_file()}


def command_names() -> list[str]:
    return sorted(p.name for p in (GUEST_GO / "cmds").iterdir() if p.is_dir())


def stub(command: str) -> bytes:
    """What /ubin/<command> holds: the kernel hands it to the builder, which builds once, then execs."""
    return f"#!{STUB_INTERPRETER} /src/cmds/{command}\n".encode()


def build_programs(store: Store, go_root: GoRoot) -> Path:
    """The prebuilt programs of every arch (for now the builder): linux_<goarch>/bin/<program>."""
    sources = guest_sources()
    inputs = {"recipe_version": RECIPE_VERSION, "go_root": go_root.root.parent.name,
              "sources": hashlib.sha256(repr(sorted(sources.items())).encode()).hexdigest()}

    def build(content: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="bm-goprog-") as tmp:
            tree = Path(tmp) / "src"
            for rel, data in sources.items():
                (tree / rel).parent.mkdir(parents=True, exist_ok=True)
                (tree / rel).write_bytes(data)
            host_go = go_root.go(host_debian_arch())
            for goarch in sorted(set(GUEST_DEBIAN_ARCH.values())):
                env = go_environment(go_root.goroot, goarch, Path(tmp) / f"cache-{goarch}", Path(tmp) / "home")
                target = content / f"linux_{goarch}/bin/{BUILDER}"
                done = subprocess.run([str(host_go), "build", "-o", str(target), f"./{BUILDER}"], cwd=tree, env=env,
                                      capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"building {BUILDER} for {goarch} failed: {done.stderr.strip()[-1000:]}")

    return store.get("go-programs", inputs, build)
