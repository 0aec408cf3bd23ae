"""Build plans of the mostly-source image: what `go build` would run for each on-demand command, worked out
on the host when the image is built, so a guest's first call runs the compiler and the linker directly
(images/guest/go/bmbuild/plan.go) instead of the go command.

Per arch, inside a rootless chroot of the image's own tree (GOROOT=/go, the source at /src, the arch's warm
cache at /gocache/linux_<goarch>): the project module's library packages are compiled into a copy of the warm
cache, then `go build -n` prints, for every command at once, the two steps left (compile the command's main
package, link), with import configurations that name compiled packages of that cache by their guest paths.
The entry holds, per arch:

    gocache/linux_<goarch>/...          the cache files the library packages added (compiled packages and
                                        Go's source index of them); the image merges them into the cache
    linux_<goarch>/plans/<command>/     plan, importcfg, importcfg.link

A plan also records what it is exact for: the toolchain (version, size of compile and link) and the sha256
of every file of the command's folder, of the folders of the module's packages it imports, and of go.mod.
The guest checks them on each first call and falls back to `go build` on any difference.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from arches import host_debian_arch
from images.debian.lock import GUEST_DEBIAN_ARCH
from images.recipes.gosource import (
    GO_TREE_COMMANDS,
    RECIPE_VERSION,
    GoRoot,
    command_sources,
    fix_cache_times,
    in_go_root,
    sources_digest,
    stamp_sources,
    write_guest_sources,
)
from images.store import Store, file_sha256
from images.tools import BuildError

PLAN_FORMAT = "1"
MODULE = "bootmatrix.local/guest"  # images/guest/go/go.mod
GUEST_STATE = "/run/bm"  # bmbuild's state folder on tmpfs; its work folder per command is below it
OUT = "$OUT"  # what bmbuild replaces with the binary it writes
LDFLAGS = "-s -w"  # bmbuild's default; a guest that sets other flags does not use the plan
_WORK_ACTION = re.compile(r"\$WORK/(b\d+)")
_ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


@dataclass
class Step:
    tool: str
    args: list[str]
    env: list[str]
    cwd: str


@dataclass
class Action:
    """One $WORK/bNNN of `go build -n`: its steps, the files it writes, the binary it is moved to."""

    steps: list[Step] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # file name in $WORK/bNNN -> text
    binary: str | None = None


def parse_build_script(text: str, wd: str) -> dict[str, Action]:
    """The actions of `go build -n`'s output (the go command ran in `wd`), by $WORK/bNNN. Only the lines a
    plan needs are read: `cat >$WORK/bNNN/<file> << 'EOF'` blocks, `cd`, tool runs, and the final `mv`."""
    actions: dict[str, Action] = {}
    cwd = wd
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("cat >$WORK/") and line.rstrip().endswith(("<< 'EOF' # internal", "<< 'EOF'")):
            target = line.split(">", 1)[1].split(" ", 1)[0]
            action, name = _WORK_ACTION.match(target).group(1), target.rsplit("/", 1)[1]  # type: ignore[union-attr]
            body = []
            for inner in lines:
                if inner == "EOF":
                    break
                body.append(inner)
            actions.setdefault(action, Action()).files[name] = "\n".join(body) + "\n"
        elif line.startswith("cd "):
            cwd = wd if line[3:].strip() == "." else line[3:].strip()
        elif line.startswith("mv $WORK/"):
            _, source, target = shlex.split(line)
            actions.setdefault(_WORK_ACTION.match(source).group(1), Action()).binary = Path(target).name  # type: ignore[union-attr]
        elif line and not line.startswith(("#", "mkdir ", "echo ", "rm ")):
            words = shlex.split(line.split(" # internal")[0])
            env = []
            while words and _ENV_ASSIGNMENT.match(words[0]):
                env.append(words.pop(0))
            if not words or not words[0].startswith("/"):
                continue  # not a tool run (the go command's own notes, such as its telemetry's)
            tool = Path(words[0]).name
            if tool == "buildid":
                continue  # rewrites build IDs in place; the plan's binary keeps the link's placeholder ID
            action = next((m.group(1) for w in words for m in [_WORK_ACTION.search(w)] if m), None)
            if action is None:
                raise BuildError(f"go build -n: a step that names no $WORK action: {line[:200]}", "go", line)
            actions.setdefault(action, Action()).steps.append(Step(tool, words[1:], env, cwd))
    return actions


@dataclass(frozen=True)
class Plan:
    command: str
    text: str  # the plan file
    files: dict[str, str]  # importcfg, importcfg.link


def make_plan(command: str, action: Action, *, source: str, goarch: str, toolchain: tuple[str, int, int],
              inputs: dict[str, str], dirs: list[str]) -> Plan:
    """The plan of one command from its `go build -n` action: $WORK/bNNN becomes the guest's work folder,
    the import configurations the plan's own files, the binary $OUT."""
    tools = [step.tool for step in action.steps]
    if tools != ["compile", "link"]:
        raise BuildError(f"the build of {command} for {goarch} is not one compile and one link ({tools}): a "
                         "package it imports is not in the warm cache", "go", " ".join(tools))
    plan_dir = f"/linux_{goarch}/plans/{command}"
    work = f"{GUEST_STATE}/cache/work/{command}"

    def guest(word: str) -> str:
        word = re.sub(r"\$WORK/b\d+/(importcfg(?:\.link)?)\b", plan_dir + r"/\1", word)
        word = re.sub(r"\$WORK/b\d+/exe/a\.out", OUT, word)
        return _WORK_ACTION.sub(work, word)

    files = {name: guest(text) for name, text in action.files.items() if name.startswith("importcfg")}
    lines = [f"bmbuild-plan\t{PLAN_FORMAT}", f"source\t{source}",
             f"toolchain\t{toolchain[0]}\t{toolchain[1]}\t{toolchain[2]}", f"work\t{work}"]
    lines += [f"dir\t{d}" for d in dirs]
    lines += [f"input\t{path}\t{digest}" for path, digest in sorted(inputs.items())]
    cwds = {step.cwd for step in action.steps}
    if len(cwds) != 1:
        raise BuildError(f"the build of {command} runs in several folders: {sorted(cwds)}", "go", "")
    lines.append(f"cwd\t{cwds.pop()}")
    for step in action.steps:
        lines += [f"env\t{step.tool}\t{assignment}" for assignment in step.env]
        lines.append("\t".join(["run", step.tool, *(guest(a) for a in step.args)]))
    text = "\n".join(lines) + "\n"
    leftover = [t for t in [text, *files.values()] if "$WORK" in t]
    if leftover:
        raise BuildError(f"the plan of {command} still names $WORK: {leftover[0][:200]}", "go", "")
    return Plan(command, text, files)


def _tree_files(root: Path, folder: str) -> dict[str, str]:
    """sha256 of every regular file in a guest folder (path as the guest sees it), not below it."""
    host = root / folder.lstrip("/")
    return {f"{folder}/{p.name}": file_sha256(p) for p in sorted(host.iterdir()) if p.is_file()}


def _module_file(root: Path, folder: str) -> str:
    """The go.mod (guest path) of the module a guest folder is in: the nearest one at or above it, as the
    go command (and bmbuild's moduleOf) finds it."""
    for parent in [PurePosixPath(folder), *PurePosixPath(folder).parents]:
        if (root / parent.relative_to("/") / "go.mod").is_file():
            return str(parent / "go.mod")
    raise BuildError(f"no go.mod at or above {folder}", "go", "")


def _make_root(go_root: GoRoot, root: Path) -> None:
    """The image's tree as the chroot sees it: GOROOT, the host's go, the module's source at the stick's
    times (Go's source index is keyed on them). Copies, not hard links: a link would move the store
    entry's ctimes and cost it a full re-hash on its next use."""
    host = host_debian_arch()
    shutil.copytree(go_root.goroot, root / "go")
    (root / f"linux_{host}/bin").mkdir(parents=True)
    shutil.copy2(go_root.go(host), root / f"linux_{host}/bin/go")
    write_guest_sources(root / "src")
    stamp_sources(root / "src")


def _plans_for_arch(go_root: GoRoot, root: Path, content: Path, goarch: str) -> None:
    cache = root / f"gocache/linux_{goarch}"
    shutil.copytree(go_root.cache(goarch), cache)
    before = {p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()}
    in_go_root(root, goarch, "build", f"{MODULE}/internal/...", wd="/src")
    commands = command_sources()
    listing = in_go_root(root, goarch, "list", "-f", "{{.ImportPath}}\t{{.Dir}}\t{{join .Deps \" \"}}", "./cmds/...",
                         *GO_TREE_COMMANDS.values(), wd="/src").stdout
    script = in_go_root(root, goarch, "build", "-n", "-buildvcs=false", f"-ldflags={LDFLAGS}", "-o", "/out/",
                        "./cmds/...", *GO_TREE_COMMANDS.values(), wd="/src").stderr
    actions = {a.binary: a for a in parse_build_script(script, "/src").values() if a.binary is not None}
    tools = go_root.goroot / f"pkg/tool/linux_{goarch}"
    version = (go_root.goroot / "VERSION").read_text().splitlines()[0].strip()
    toolchain = (version, (tools / "compile").stat().st_size, (tools / "link").stat().st_size)
    for line in listing.splitlines():
        _, folder, deps = line.split("\t")
        command = Path(folder).name
        if command not in commands or commands[command] != folder:
            continue
        own = [f"/src/{d.removeprefix(MODULE + '/')}" for d in deps.split() if d.startswith(MODULE + "/")]
        dirs = [folder, *sorted(own)]
        go_mod = _module_file(root, folder)
        inputs = {go_mod: file_sha256(root / go_mod.lstrip("/"))}
        for d in dirs:
            inputs.update(_tree_files(root, d))
        if command not in actions:
            raise BuildError(f"go build -n printed no build of {command} for {goarch}", "go", "")
        plan = make_plan(command, actions[command], source=folder, goarch=goarch, toolchain=toolchain,
                         inputs=inputs, dirs=dirs)
        target = content / f"linux_{goarch}/plans/{command}"
        target.mkdir(parents=True)
        (target / "plan").write_text(plan.text)
        for name, text in plan.files.items():
            (target / name).write_text(text)
    missing = set(commands) - {p.name for p in (content / f"linux_{goarch}/plans").iterdir()}
    if missing:
        raise BuildError(f"no plan for {sorted(missing)} on {goarch}", "go", "")
    added = sorted({p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()} - before)
    for rel in added:
        destination = content / f"gocache/linux_{goarch}" / rel
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cache / rel, destination)
    fix_cache_times(content / f"gocache/linux_{goarch}", write_trim=False)


def build_plans(store: Store, go_root: GoRoot) -> Path:
    """The plans of every arch, and the cache files of the module's library packages they name."""
    inputs = {"recipe_version": RECIPE_VERSION, "plan_format": PLAN_FORMAT, "go_root": go_root.root.parent.name,
              "sources": sources_digest(), "ldflags": LDFLAGS,
              "recipe": file_sha256(Path(__file__))}

    def build(content: Path) -> None:
        root = content / "root"
        _make_root(go_root, root)
        for goarch in sorted(set(GUEST_DEBIAN_ARCH.values())):
            _plans_for_arch(go_root, root, content, goarch)
        shutil.rmtree(root)

    return store.get("go-plans", inputs, build)
