"""Compile latency of the mostly-source image, every command on every arch, side by side with the host.

For each arch (and each variant asked for) `--boots` guests (default 3) boot the image one after the
other; once a guest's background warm-up build is done (the seconds it took after ready are printed),
every command of the sweep (matrix/latency.py) is called twice by its stub: first call = build + run,
second = run through the stub; then each built binary is run as itself, so "2nd over own" is what the
stub and the builder add to a call. A command's figure is its median over the boots. The host then
builds the same commands natively (amd64, `go build` of the host's go from the same Go root, a fresh
copy of the same warm cache, in the same order), so the ratio guest/host compares like with like.

Prints per command, then per arch and variant: ready, warm-up, median and slowest first call, median
second call and its excess over the binary's own run, the host's median, the ratio, and where a first
call's time goes: the builder's own report (BMBUILD_VERBOSE) of its plan check, compile and link (medians
over commands), and the rest (exec of the stub, the builder and the binary, the binary's run, the console
round trip). "plan" counts the first calls that took the build plan (the others ran `go build`).

`--build` also times building the whole 3-arch image (Go root with warm caches, programs, first stages,
stick) in an empty store: `warm` shares the downloaded packages, `cold` downloads them too.

Variants (what each changes, to find what costs time in a first call):
    default       the image as shipped (first calls through the build plans)
    no-plan       every first call through `go build`, as before the plans (BMBUILD_PLAN=0)
    gogc100       the plan's compile and link at Go's default GOGC=100 instead of 400 (BMBUILD_GOGC=100)
    thp           transparent huge pages for all anonymous memory (transparent_hugepage=always)
    smp1          one vCPU instead of two
    cache-copy    warm cache copied to tmpfs at boot instead of linked (bm.gocache=copy)
    dwarf         linker writes symbols and DWARF (BMBUILD_LDFLAGS= instead of "-s -w")
    gomaxprocs1   the go command and the compiler limited to one thread
    no-warmup     no warm-up build in the background after boot (bm.warmup=0)

    .venv/bin/python bench/compile_latency.py [--arch riscv64] [--variants default,no-plan] [--boots 3]
                                              [--build warm] [--prebuild]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arches import NAMES as ARCHES
from arches import host_debian_arch
from harness.deadline import Deadline
from images.debian.fetch import share_downloads
from images.recipes.gosource import BUILD_ENV, GUEST_GO, build_go_root, command_sources
from images.store import Store
from matrix.lab import Lab
from matrix.latency import STAGES, SWEEP, CallTimes, own_run_times, run_sweep, wait_for_log
from matrix.profiles import direct_cell

VARIANTS = {  # name -> (kernel parameters, shell setup before the sweep, vCPUs)
    "default": ("", "", 2),
    "no-plan": ("", "export BMBUILD_PLAN=0", 2),
    "gogc100": ("", "export BMBUILD_GOGC=100", 2),
    "thp": ("transparent_hugepage=always", "", 2),
    "smp1": ("", "", 1),
    "cache-copy": ("bm.gocache=copy", "", 2),
    "dwarf": ("", "export BMBUILD_LDFLAGS=", 2),
    "gomaxprocs1": ("", "export GOMAXPROCS=1", 2),
    "no-warmup": ("bm.warmup=0", "", 2),
}


@dataclass
class Sweep:
    arch: str
    variant: str
    calls: dict[str, CallTimes]
    own: dict[str, float]  # seconds of each built binary run as itself
    ready: float | None
    warmup_wait: float | None  # seconds from ready until the warm-up build was done (None: no warm-up)
    boot_medians: list[float] = field(default_factory=list)  # each boot's median first call, for the spread


def guest_sweep(lab: Lab, arch: str, variant: str, workdir: Path) -> Sweep:
    append, setup, vcpus = VARIANTS[variant]
    cell = direct_cell(arch, image="gosource", memory_mib=2048, smp=vcpus, append=append)
    machine, record = lab.machine(cell, workdir)
    with machine:
        lab.boot(machine, record, Deadline.after(lab.boot_budget(cell, record.accel)))
        if setup:
            machine.console.run(setup, Deadline.after(30))
        sweep = run_sweep(machine.console)
        warmup, calls = sweep.warmup, sweep.calls
        own = own_run_times(machine.console, SWEEP)
    return Sweep(arch, variant, calls, own, record.time_to_ready, warmup)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def combined(boots: list[Sweep]) -> Sweep:
    """One sweep of the boots of an arch and variant: each figure the median over the boots."""
    calls = {}
    for name in boots[0].calls:
        runs = [b.calls[name] for b in boots]
        how = runs[0].how if len({r.planned for r in runs}) == 1 else "mixed"
        stage_names = {stage for r in runs for stage in r.stages}
        stages = ", ".join(f"{stage} {_median([r.stages[stage] for r in runs if stage in r.stages]):.3f} s"
                           for stage in STAGES if stage in stage_names)
        calls[name] = CallTimes(_median([r.first for r in runs]), _median([r.second for r in runs]),
                                all(r.built for r in runs), f"plan: {stages}" if how.startswith("plan:") else how)
    own = {name: _median([b.own[name] for b in boots]) for name in boots[0].own}
    ready = [b.ready for b in boots if b.ready is not None]
    warm = [b.warmup_wait for b in boots if b.warmup_wait is not None]
    return Sweep(boots[0].arch, boots[0].variant, calls, own, _median(ready) if ready else None,
                 _median(warm) if warm else None,
                 sorted(statistics.median(c.first for c in b.calls.values()) for b in boots))


def host_builds(lab: Lab, work: Path) -> dict[str, float]:
    """Native builds of the sweep's commands, same order, from a fresh copy of the host arch's warm cache."""
    go_root = build_go_root(lab.store, lab.fetcher())  # the store entry the image was built from
    goarch = host_debian_arch()
    cache = work / "host-cache"
    shutil.copytree(go_root.cache(goarch), cache)
    tree = work / "src"
    shutil.copytree(GUEST_GO, tree)
    env = {"PATH": "/usr/bin:/bin", "GOROOT": str(go_root.goroot), "GOARCH": goarch, "GOCACHE": str(cache),
           "GOPATH": str(work / "gopath"), "HOME": str(work), **BUILD_ENV}
    go = str(go_root.go(goarch))
    # Like the guest's image, whose std index is in the shipped cache: index first, untimed.
    subprocess.run([go, "list", "-deps", "./cmds/...", "cmd/gofmt"], cwd=tree, env=env, check=True,
                   capture_output=True)
    sources = command_sources()
    seconds = {}
    for name in SWEEP:
        source = sources[name]
        folder = go_root.goroot / source.removeprefix("/go/") if source.startswith("/go/") else \
            tree / source.removeprefix("/src/")
        started = time.monotonic()
        subprocess.run([go, "build", "-buildvcs=false", "-ldflags=-s -w", "-o", str(work / "bin" / name), "."],
                       cwd=folder, env=env, check=True, capture_output=True)
        seconds[name] = time.monotonic() - started
    return seconds


def prebuild(lab: Lab, arch: str, workdir: Path) -> str:
    """Boot with bm.prebuild=1: when the background pre-build is done, and what a first call costs then."""
    cell = direct_cell(arch, image="gosource", memory_mib=2048, smp=2, append="bm.prebuild=1")
    machine, record = lab.machine(cell, workdir)
    with machine:
        lab.boot(machine, record, Deadline.after(lab.boot_budget(cell, record.accel)))
        found = wait_for_log(machine.console, "/run/bm/prebuild.log", "prebuild of", 900)
        if found is None:
            raise RuntimeError("the guest wrote no /run/bm/prebuild.log")
        waited, log = found
        started = time.monotonic()
        machine.console.run("uname >/dev/null", Deadline.after(60))
        first = time.monotonic() - started
    return (f"{arch}: ready at {record.time_to_ready:.2f} s; {log.splitlines()[-1]} (seen {waited:.0f} s after "
            f"ready); a first call after it: {first:.3f} s")


def time_build(kind: str, lab: Lab) -> float:
    with tempfile.TemporaryDirectory(prefix=f"bm-bench-build-{kind}-") as tmp:
        if kind == "warm":
            share_downloads(lab.store.root, Path(tmp))
        store = Store(Path(tmp))
        started = time.monotonic()
        Lab(store).gosource()
        return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", action="append", choices=ARCHES)
    parser.add_argument("--variants", default="default", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--build", action="append", choices=("warm", "cold"), default=[])
    parser.add_argument("--prebuild", action="store_true", help="also time the background pre-build per arch")
    parser.add_argument("--boots", type=int, default=3, help="guests per arch and variant (default 3)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}")
    lab = Lab()
    lab.gosource()
    sweeps = []
    with tempfile.TemporaryDirectory(prefix="bm-bench-latency-") as tmp:
        work = Path(tmp)
        for variant in variants:
            for arch in args.arch or ARCHES:
                boots = [guest_sweep(lab, arch, variant, work / f"{arch}-{variant}-{n}") for n in range(args.boots)]
                sweeps.append(combined(boots))
        host = host_builds(lab, work / "host")
        prebuilt = [prebuild(lab, arch, work / f"{arch}-prebuild") for arch in args.arch or ARCHES] \
            if args.prebuild else []
    print(f"medians over {args.boots} boot(s) per arch and variant\n")
    print(f"{'arch':8} {'variant':12} {'command':10} {'first s':>8} {'second s':>9} {'own s':>6} {'host s':>7} "
          f"{'ratio':>6}  how")
    for sweep in sweeps:
        for name, times in sweep.calls.items():
            print(f"{sweep.arch:8} {sweep.variant:12} {name:10} {times.first:8.2f} {times.second:9.3f} "
                  f"{sweep.own[name]:6.3f} {host[name]:7.2f} {times.first / host[name]:6.1f}  {times.how}"
                  + ("" if times.built else "  (not built!)"))
    print(f"\n{'arch':8} {'variant':12} {'ready s':>8} {'warm-up s':>9} {'median 1st':>10} {'max 1st':>8} "
          f"{'(command)':10} {'median 2nd':>10} {'2nd-own':>8} {'host med':>8} {'ratio':>6} {'plan':>5} "
          f"{'check':>6} {'compile':>7} {'link':>6} {'rest':>6}")
    host_median = statistics.median(host.values())
    for sweep in sweeps:
        firsts = {name: t.first for name, t in sweep.calls.items()}
        slowest = max(firsts, key=lambda name: firsts[name])
        median = statistics.median(firsts.values())
        ready = f"{sweep.ready:8.2f}" if sweep.ready is not None else "       -"
        warm = f"{sweep.warmup_wait:9.1f}" if sweep.warmup_wait is not None else "        -"
        excess = statistics.median(t.second - sweep.own[name] for name, t in sweep.calls.items())
        planned = sum(t.planned for t in sweep.calls.values())
        stage = {key: _median([t.stages[key] for t in sweep.calls.values() if key in t.stages])
                 for key in STAGES}
        rest = statistics.median(t.first - sum(t.stages.values()) for t in sweep.calls.values())
        print(f"{sweep.arch:8} {sweep.variant:12} {ready} {warm} {median:10.2f} {firsts[slowest]:8.2f} {slowest:10} "
              f"{statistics.median(t.second for t in sweep.calls.values()):10.3f} {excess:8.3f} {host_median:8.3f} "
              f"{median / host_median:6.1f} {planned:2}/{len(sweep.calls):2} {stage['check']:6.3f} "
              f"{stage['compile']:7.3f} {stage['link']:6.3f} {rest:6.3f}")
    print("\nspread over the boots: each boot's median first call, lowest to highest")
    for sweep in sweeps:
        print(f"{sweep.arch:8} {sweep.variant:12} " + " ".join(f"{m:.2f}" for m in sweep.boot_medians))
    for line in prebuilt:
        print(f"\nbackground pre-build, {line}")
    for kind in args.build:
        print(f"\n3-arch image build, {kind} package cache: {time_build(kind, lab):.1f} s (goal for warm: 60 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
