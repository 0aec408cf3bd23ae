"""The mostly-source image: one VFAT root for all three arches that is mostly Go source, a few prebuilt
programs per arch, and every other command compiled on demand on first use.

Three store entries build it. The Go root (build_go_root) holds the names the guest will see:
    go/                       GOROOT: VERSION, go.env, src/ (Debian's golang-1.24-src), pkg/include/,
                              pkg/tool/linux_<goarch>/{compile,link,asm,buildid} for every arch
    linux_<goarch>/bin/go     the go command of each arch
    gocache/linux_<goarch>/   a warm GOCACHE per arch

The warm caches are cross-built on the host by the host's own go (GOARCH=<arch>, CGO_ENABLED=0, -trimpath)
inside this very tree as the guest will see it (a rootless chroot: GOROOT=/go), and a guest reuses them as
they are: for a release toolchain Go keys compiled packages on the tool's version line ("compile version
go1.24.4"), not on the binary, and with -trimpath not on the GOROOT path; its per-package source index,
also in the cache, is keyed on the GOROOT path and file times, hence the chroot and the fixed times.
Measured (riscv64 guest, QEMU 10, 2 vCPUs, TCG): first `go build` of a small command 88.7 s and 55
compiles with an empty cache, one compile with the shipped one. tests/vm/test_gosource.py keeps it true.

The programs (build_programs) are the Go init and the on-demand builder of every arch, cross-built on the
host. The image (build_gosource_image) is the boot stick of images/recipes/stick.py whose per-arch initrd
is the first stage (images/guest/stage1.sh: find the VFAT root, switch_root to /linux_<goarch>/bin/init),
with the root added to the same partition:

    /go, /gocache/linux_<goarch>     the Go root above
    /linux_<goarch>/bin/             init, bmbuild, go, sh (dash)
    /lib*/...                        dash's dynamic loader and C library, at their Debian multiarch paths
    /src/                            the project's guest Go module: go.mod, init, bmbuild, cmds/<command>
    /ubin/<command>                  `#!/run/bm/bin/bmbuild /src/cmds/<command>`, and gofmt from /go/src
    /dev /proc /sys /tmp /run        mount points

Nothing needs a symlink (FAT has none): the stubs name /run/bm/bin, which init makes on tmpfs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from arches import BY_DEBIAN, host_debian_arch
from images.debian.extract import extract_deb
from images.debian.fetch import DebianFetcher, Debs, Packages, built_from
from images.debian.lock import GO_SRC_SET, GO_VERSION, GUEST_DEBIAN_ARCH, STICK_TOOLS_SET, go_set, shell_set
from images.recipes import esp, fat, stick
from images.recipes.fat import EPOCH, file_size
from images.recipes.minimal import MinimalImage, build_minimal
from images.recipes.stick import stick_files, stick_tools, write_stick
from images.store import Store, code_sha256, scratch_dir
from images.tools import run_tool

RECIPE_VERSION = 4
GO_TOOLS = ("compile", "link", "asm", "buildid")  # all `go build` runs with CGO_ENABLED=0
# What the warm caches hold: the standard-library packages small system commands use, and their deps.
WARM_PACKAGES = (
    "bufio", "bytes", "crypto/sha256", "encoding/hex", "encoding/json", "errors", "flag", "fmt", "io", "io/fs",
    "net", "net/http", "os", "os/exec", "os/signal", "path/filepath", "regexp", "sort", "strconv", "strings",
    "syscall", "text/tabwriter", "time",
)
# Real programs of the Go tree compiled on demand too; their dependencies are warmed (not themselves).
GO_TREE_COMMANDS = {"gofmt": "cmd/gofmt"}
# Go's cache stamps each action entry with the time it was written, and trim.txt with the last trim:
# both are fixed so the image is bit-identical from build to build (init stamps trim.txt at boot).
CACHE_ENTRY_TIME = re.compile(rb"^(v1 [0-9a-f]{64} [0-9a-f]{64} +\d+ )( *\d+)\n$")
FIXED_CACHE_TIME = 946684800 * 10**9
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
    go_sets = {arch: go_set(arch) for arch in GUEST_DEBIAN_ARCH}

    def inputs(sets: Packages) -> dict[str, object]:
        return {
            "recipe_version": RECIPE_VERSION,
            "toolchains": {arch: sets[name][0].sha256 for arch, name in sorted(go_sets.items())},
            "source": sets[GO_SRC_SET][0].sha256,
            "tools": list(GO_TOOLS),
            "warm": list(WARM_PACKAGES),
            "go_tree_commands": GO_TREE_COMMANDS,
            "env": BUILD_ENV,
        }

    lib = f"usr/lib/go-{GO_VERSION}"
    share = f"usr/share/go-{GO_VERSION}"

    def build(content: Path, debs: Debs) -> None:
        toolchains = {arch: debs[name][0] for arch, name in go_sets.items()}
        ((_, source_deb),) = debs[GO_SRC_SET]
        goroot = content / "go"
        with scratch_dir("go") as tmp:
            scratch = Path(tmp)
            extract_deb(source_deb, scratch / "src", lambda p: p.startswith(f"{share}/src/"))
            for guest_arch, (_, deb) in sorted(toolchains.items()):
                extract_deb(deb, scratch / GUEST_DEBIAN_ARCH[guest_arch])
            shutil.move(scratch / "src" / share / "src", goroot / "src")
            for guest_arch in sorted(toolchains):
                goarch = GUEST_DEBIAN_ARCH[guest_arch]
                unpacked = scratch / goarch
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
            stamp_sources(goroot / "src")
            # One arch after the other: the three side by side took longer here (50 s, not 43 s), the
            # compiles of one `go build` already keep both cores busy most of the time.
            for guest_arch in sorted(toolchains):
                _warm_cache(content, GUEST_DEBIAN_ARCH[guest_arch])
            shutil.rmtree(content / "dev")

    sets = [*go_sets.values(), GO_SRC_SET]
    return GoRoot(built_from(store, fetcher, f"go-root-{GO_VERSION}", sets, inputs_of=inputs, build=build))


def stamp_sources(src: Path) -> None:
    """Give the source tree the time every file on the stick has: Go's per-package source index (its
    "module index", kept in the build cache) is keyed on each file's name, size and mtime, so the index
    built on the host is only found by the guest when the times agree."""
    for path in src.rglob("*"):
        os.utime(path, (EPOCH, EPOCH), follow_symlinks=False)


def in_go_root(content: Path, goarch: str, *args: str, wd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the host's go inside the root as the guest will see it (GOROOT=/go, GOCACHE=/gocache/...):
    a rootless chroot in a user namespace. The cache's index entries name the GOROOT path, so entries
    made under another path would miss in the guest, and its first build would index the std packages
    itself (measured: 3 s on x86_64 under TCG)."""
    name = f"warm-{goarch}"  # one per arch: the plans recipe runs the three arches in one root
    scratch = content / name
    scratch.mkdir(exist_ok=True)
    # os/exec opens /dev/null for a child's unused stdin/stdout; an empty file does (no mknod rootless).
    # The caller removes it when every run in the root is done.
    (content / "dev").mkdir(exist_ok=True)
    if not (content / "dev/null").exists():
        (content / "dev/null").write_bytes(b"")
    env = {"PATH": f"/linux_{host_debian_arch()}/bin", "GOROOT": "/go", "GOARCH": goarch,
           "GOCACHE": f"/gocache/linux_{goarch}", "GOPATH": f"/{name}/gopath", "HOME": f"/{name}",
           "TMPDIR": f"/{name}", "TZ": "UTC", **BUILD_ENV}
    unshare = shutil.which("unshare") or "/usr/bin/unshare"  # util-linux; env PATH below is the root's
    argv = [unshare, "--user", "--map-root-user", f"--root={content}", f"--wd={wd or '/' + name}",
            f"/linux_{host_debian_arch()}/bin/go", *args]
    try:
        return run_tool(argv, f"running go in the image's root for {goarch} (go {' '.join(args[:3])} ...; a "
                        "rootless chroot needs user namespaces)", env=env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _warm_cache(content: Path, goarch: str) -> None:
    tree_commands = list(GO_TREE_COMMANDS.values())
    dependencies = [p for p in in_go_root(content, goarch, "list", "-deps", *tree_commands).stdout.split()
                    if p not in tree_commands]
    in_go_root(content, goarch, "build", *WARM_PACKAGES, *dependencies)
    fix_cache_times(content / f"gocache/linux_{goarch}")


def fix_cache_times(cache: Path, *, write_trim: bool = True) -> None:
    for entry in cache.glob("??/*-a"):
        fixed = CACHE_ENTRY_TIME.sub(lambda m: m.group(1) + b"%20d\n" % FIXED_CACHE_TIME, entry.read_bytes())
        entry.write_bytes(fixed)
    if write_trim:
        (cache / "trim.txt").write_text(str(FIXED_CACHE_TIME // 10**9))


GUEST_GO = Path(__file__).parent.parent / "guest" / "go"
STAGE1_INIT = Path(__file__).parent.parent / "guest" / "stage1.sh"
BUILDER = "bmbuild"
PROGRAMS = ("init", BUILDER)  # prebuilt from /src, besides go and the shell
STUB_INTERPRETER = "/run/bm/bin/bmbuild"  # /run/bm/bin -> /linux_<goarch>/bin, made on tmpfs at boot
# The first stage's drivers: the VFAT root and the code pages its mount options name.
STAGE1_MODULES = ("vfat", "nls_cp437", "nls_ascii", "nls_utf8")
# dash's dynamic loader goes where its PT_INTERP points (arches.Arch.loader), the C library where that
# loader searches (/lib/<triplet>); no two arches share a path, so one root serves all.
MOUNT_POINTS = ("dev", "proc", "sys", "tmp", "run")
FAT_FORBIDDEN = set('<>:"\\|?*')
ELF_MACHINE = {0x3E: "amd64", 0xB7: "arm64", 0xF3: "riscv64", 0x03: "i386"}  # i386: syslinux modules


def guest_sources(root: Path = GUEST_GO) -> dict[str, bytes]:
    """A guest-side Go tree by path: by default the mostly-source image's (go.mod, init, the builder, the
    commands; below /src in the image)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_guest_sources(tree: Path, root: Path = GUEST_GO) -> None:
    """The guest Go tree `root` written out below `tree`, as the builds on the host read it."""
    for rel, data in guest_sources(root).items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)


def sources_digest(root: Path = GUEST_GO) -> str:
    """sha256 of the guest Go tree `root`: a store input of everything built from it."""
    return hashlib.sha256(repr(sorted(guest_sources(root).items())).encode()).hexdigest()


def build_on_host(go_root: GoRoot, tree: Path, scratch: Path, builds: dict[str, list[tuple[Path, str]]]) -> None:
    """Build, with the host's go of the image's Go root, each (output, package) of `builds[goarch]` from
    the module in `tree`, stripped. Each arch builds from a copy of its warm cache (in `scratch`): the
    standard library is compiled already (with -trimpath its entries do not name the GOROOT path),
    which took 5-6 s per arch without it."""
    host_go = go_root.go(host_debian_arch())
    for goarch, targets in builds.items():
        cache = scratch / f"cache-{goarch}"
        shutil.copytree(go_root.cache(goarch), cache)
        env = go_environment(go_root.goroot, goarch, cache, scratch / "home")
        for output, package in targets:
            run_tool([str(host_go), "build", "-buildvcs=false", "-ldflags=-s -w", "-o", str(output), package],
                     f"building {package} for {goarch}", cwd=tree, env=env)


def command_names() -> list[str]:
    return sorted(p.name for p in (GUEST_GO / "cmds").iterdir() if p.is_dir())


def command_sources() -> dict[str, str]:
    """Every command compiled on demand, and the source folder its stub names."""
    return {**{name: f"/src/cmds/{name}" for name in command_names()},
            **{name: f"/go/src/{package}" for name, package in GO_TREE_COMMANDS.items()}}


def stub(command: str, source: str | None = None) -> bytes:
    """What /ubin/<command> holds: the kernel hands it to the builder, which builds once, then execs."""
    return f"#!{STUB_INTERPRETER} {source or f'/src/cmds/{command}'}\n".encode()


def build_programs(store: Store, go_root: GoRoot) -> Path:
    """The prebuilt programs of every arch: linux_<goarch>/bin/{init,bmbuild}."""
    inputs = {"recipe_version": RECIPE_VERSION, "go_root": go_root.root.parent.name, "programs": list(PROGRAMS),
              "sources": sources_digest()}

    def build(content: Path) -> None:
        with scratch_dir("goprog") as tmp:
            tree = Path(tmp) / "src"
            write_guest_sources(tree)
            build_on_host(go_root, tree, Path(tmp), {
                goarch: [(content / f"linux_{goarch}/bin/{program}", f"./{program}") for program in PROGRAMS]
                for goarch in sorted(set(GUEST_DEBIAN_ARCH.values()))
            })

    return store.get("go-programs", inputs, build)


def _fat_safe(paths: list[str]) -> tuple[list[str], list[str]]:
    """(kept, left out): FAT cannot hold some characters, nor two names that differ only in case."""
    kept, left_out, seen = [], [], set()
    for rel in sorted(paths):
        folded = rel.lower()
        if FAT_FORBIDDEN & set(rel) or folded in seen or any(part.endswith((" ", ".")) for part in rel.split("/")):
            left_out.append(rel)
            continue
        seen.add(folded)
        kept.append(rel)
    return kept, left_out


def _shell_files(debs: Debs, scratch: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for guest_arch, goarch in GUEST_DEBIAN_ARCH.items():
        unpacked = scratch / f"shell-{goarch}"
        for _, deb in debs[shell_set(guest_arch)]:
            extract_deb(deb, unpacked)
        triplet, loader = BY_DEBIAN[goarch].triplet, BY_DEBIAN[goarch].loader
        files[f"linux_{goarch}/bin/sh"] = unpacked / "usr/bin/dash"
        files[loader] = unpacked / f"usr/lib/{triplet}" / Path(loader).name
        files[f"lib/{triplet}/libc.so.6"] = unpacked / f"usr/lib/{triplet}/libc.so.6"
    return files


def root_files(go_root: GoRoot, programs: Path, plans: Path, shell: dict[str, Path]
               ) -> tuple[dict[str, bytes | Path], list[str]]:
    """Every file of the mostly-source root by path, and the Go tree files FAT cannot hold (left out)."""
    tree = {p.relative_to(go_root.root).as_posix(): p for p in go_root.files()}
    tree.update({p.relative_to(plans).as_posix(): p for p in plans.rglob("*") if p.is_file()})
    kept, left_out = _fat_safe(list(tree))
    files: dict[str, bytes | Path] = {rel: tree[rel] for rel in kept}
    files.update({p.relative_to(programs).as_posix(): p for p in programs.rglob("*") if p.is_file()})
    files.update(shell)
    files.update({f"src/{rel}": data for rel, data in guest_sources().items()})
    files.update({f"ubin/{name}": stub(name, source) for name, source in command_sources().items()})
    return files, left_out


def elf_arch(data: bytes | Path) -> str | None:
    """The Debian arch an ELF file is built for, or None for anything else."""
    if isinstance(data, Path):
        with data.open("rb") as handle:
            data = handle.read(20)
    if data[:4] != b"\x7fELF":
        return None
    return ELF_MACHINE.get(int.from_bytes(data[18:20], "little"), "other")


def census(files: dict[str, bytes | Path]) -> dict[str, object]:
    """How mostly-source the root is: source files (Go tree and guest module) and ELF programs per arch.
    The warm caches hold compiled objects, not programs, and are counted apart."""
    source = [rel for rel in files if rel.startswith(("go/src/", "src/"))]
    binaries: dict[str, list[str]] = {}
    for rel, data in files.items():
        if rel.startswith("gocache/") or rel in source:
            continue  # the race .syso objects and test data of the Go tree are source, not programs
        arch = elf_arch(data)
        if arch is not None:
            binaries.setdefault(arch, []).append(rel)
    return {
        "source_files": len(source),
        "go_files": sum(1 for rel in source if rel.endswith(".go")),
        "binaries": {arch: sorted(paths) for arch, paths in sorted(binaries.items())},
        "cache_files": sum(1 for rel in files if rel.startswith("gocache/")),
        "files": len(files),
        "bytes": sum(file_size(d) for d in files.values()),
    }


@dataclass(frozen=True)
class GoSourceImage:
    stick: Path
    stage1: dict[str, MinimalImage]  # kernel + first-stage initrd of each arch, for direct boots
    census: dict[str, object]
    key: str


def build_gosource_image(
    store: Store, fetcher: DebianFetcher, *, go_root: GoRoot, programs: Path, plans: Path,
    stage1: dict[str, MinimalImage],
) -> GoSourceImage:
    shells = {arch: shell_set(arch) for arch in GUEST_DEBIAN_ARCH}

    def inputs(sets: Packages) -> dict[str, object]:
        return {
            "recipe_version": RECIPE_VERSION,
            "go_root": go_root.root.parent.name,
            "programs": programs.parent.name,
            "plans": plans.parent.name,
            "stage1": {arch: image.key for arch, image in sorted(stage1.items())},
            "shell": {arch: [p.sha256 for p in sets[name]] for arch, name in shells.items()},
            "tools": sorted(p.sha256 for p in sets[STICK_TOOLS_SET]),
            "sources": sources_digest(),
            "recipes": [hashlib.sha256(Path(__file__).read_bytes()).hexdigest(), code_sha256(stick, fat, esp)],
        }

    def build(content: Path, debs: Debs) -> None:
        with scratch_dir("gosource") as tmp, stick_tools(debs[STICK_TOOLS_SET]) as tools:
            files, left_out = root_files(go_root, programs, plans, _shell_files(debs, Path(tmp)))
            files.update(stick_files(stage1, tools, uefi_only=False))
            write_stick(content / "stick.img", files, tools, uefi_only=False, directories=MOUNT_POINTS)
            summary = {**census(files), "left_out": left_out}
            (content / "census.json").write_text(json.dumps(summary, indent=1) + "\n")

    sets = [STICK_TOOLS_SET, *shells.values()]
    root = built_from(store, fetcher, "gosource-image", sets, inputs_of=inputs, build=build)
    return GoSourceImage(root / "stick.img", stage1, json.loads((root / "census.json").read_text()), root.parent.name)


# The first stage's own words when it cannot find the root (images/guest/stage1.sh), and Debian's.
STAGE1_BAD_PATTERNS = (("root not found", r"bootmatrix: no VFAT partition holds[^\n]*|Gave up waiting for root[^\n]*"),)


def build_stage1(store: Store, fetcher: DebianFetcher, arch: str) -> MinimalImage:
    return build_minimal(store, fetcher, arch, modules=STAGE1_MODULES, init=STAGE1_INIT, name="gosource-stage1",
                         bad_patterns=STAGE1_BAD_PATTERNS)
