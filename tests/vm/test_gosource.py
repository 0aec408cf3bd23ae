"""The mostly-source image (issue 5): a VFAT root of Go source for three arches, a few prebuilt programs
per arch, every other command compiled on first call; its latency gate; its reproducibility."""

from __future__ import annotations

import hashlib
import statistics
from pathlib import Path

import pytest

from arches import NAMES as ARCHES
from harness.deadline import Deadline
from harness.guestnet import LEASE_READBACK, parse_lease
from harness.net import UserNet
from harness.payload_server import PayloadServer
from images.debian.fetch import share_downloads
from images.debian.lock import GUEST_DEBIAN_ARCH
from images.recipes.gosource import GoSourceImage, command_names, command_sources, guest_sources
from images.store import Store
from matrix.lab import Lab, Unavailable
from matrix.latency import (
    REFERENCE_OUTPUT,
    judge_latency,
    measure_calls,
    speed_reference,
    wait_for_log,
    wait_for_warmup,
)
from matrix.model import GOSOURCE_MATRIX, Cell, load_compile_budget, load_matrix
from matrix.plugin import cannot_run

pytestmark = pytest.mark.vm
MAX_PROGRAMS_PER_ARCH = 15
# A printf(1) format inside single quotes: the program imports crypto/sha256 and fmt, which the shipped
# cache holds compiled.
HELLO = (r'package main\n\nimport (\n\t"crypto/sha256"\n\t"fmt"\n)\n\n'
         r'func main() { fmt.Printf("%%x\\n", sha256.Sum256([]byte("bootmatrix"))) }\n')


def gosource_cell(arch: str, append: str = "") -> Cell:
    """The direct cell of `arch` in matrix/gosource.toml (its memory and vCPUs), with `append`."""
    cell = next(c for c in load_matrix(GOSOURCE_MATRIX) if c.arch == arch and c.media == "direct")
    return cell.model_copy(update={"append": append})


@pytest.fixture(scope="module")
def image(bootmatrix_lab: Lab, request: pytest.FixtureRequest) -> GoSourceImage:
    try:
        return bootmatrix_lab.gosource()
    except Unavailable as error:
        cannot_run(request.config, f"the mostly-source image cannot be built here: {error}")


def test_the_root_is_mostly_source(image: GoSourceImage, record_property) -> None:
    census = image.census
    binaries = census["binaries"]
    assert isinstance(binaries, dict)
    record_property("source_files", census["source_files"])
    record_property("go_files", census["go_files"])
    record_property("programs_per_arch", {arch: len(paths) for arch, paths in binaries.items()})
    record_property("left_out_for_fat", len(census["left_out"]))  # type: ignore[arg-type]
    assert census["source_files"] >= 10_000 and census["go_files"] >= 7_000, census  # type: ignore[operator]
    for goarch in ("amd64", "arm64", "riscv64"):
        programs = binaries[goarch]
        assert f"linux_{goarch}/bin/init" in programs and f"linux_{goarch}/bin/sh" in programs
        assert len(programs) <= MAX_PROGRAMS_PER_ARCH, programs
    # Only syslinux's BIOS modules (32-bit x86, the boot loader's) are ELF files of no guest arch.
    assert set(binaries) <= {"amd64", "arm64", "riscv64", "i386"}, binaries


def _references(release: str, machine: str) -> dict[str, tuple[str, str]]:
    """command -> (arguments, the exact output), computed here from what the image holds. ls comes first:
    the test uses it to read inode numbers."""
    go_mod = guest_sources()["go.mod"]
    text = go_mod.decode()
    return {
        "ls": ("/src/cmds", "\n".join(command_names())),
        "uname": ("-srm", f"Linux {release} {machine}"),
        "cat": ("/src/go.mod", text.rstrip("\n")),
        "sha256sum": ("/src/go.mod", f"{hashlib.sha256(go_mod).hexdigest()}  /src/go.mod"),
        "wc": ("/src/go.mod", f"{text.count(chr(10))} {len(text.split())} {len(go_mod)} /src/go.mod"),
    }


@pytest.mark.parametrize("arch", ARCHES)
def test_commands_build_on_first_call_then_run_at_once(
    bootmatrix_vms, image: GoSourceImage, arch: str, record_property
) -> None:
    guest = bootmatrix_vms(gosource_cell(arch))
    run = lambda command, seconds=600: guest.console.run(command, Deadline.after(seconds))  # noqa: E731
    # The shell finds the stubs on PATH: nothing else answers to `ls` (no busybox on this root).
    assert run("command -v ls") == ("/ubin/ls", 0)
    references = _references(image.stage1[arch].kernel_release, arch)
    timings = {}
    for command, (arguments, expected) in references.items():
        first, code = run(f"BMBUILD_VERBOSE=1 {command} {arguments} 2>&1")  # the builder speaks before the exec
        report, _, output = first.partition("\n")
        assert code == 0 and report.startswith(f"bmbuild: built {command} in") and output == expected, first
        assert "(plan: check" in report, report  # the image's exact plan, not `go build`
        timings[command] = float(report.split(" in ")[1].split()[0])
        inode = run(f"ls -i /run/bm/cache/bin | grep ' {command}$'")
        second, code = run(f"BMBUILD_VERBOSE=1 {command} {arguments}")
        assert (second, code) == (expected, 0)  # no "built" line: not rebuilt
        assert run(f"ls -i /run/bm/cache/bin | grep ' {command}$'") == inode  # the very same binary
        guest.metric(f"build_{command}_s", timings[command], "s")
    record_property("build_seconds", timings)

    # A command whose source does not compile: the compiler's words and a non-zero exit.
    output, code = run("cp -r /src /tmp/ && mkdir -p /tmp/src/cmds/broken /tmp/ubin && "
                       "printf 'package main\\nfunc main() { undefinedThing() }\\n' > /tmp/src/cmds/broken/main.go && "
                       "printf '#!/run/bm/bin/bmbuild /tmp/src/cmds/broken\\n' > /tmp/ubin/broken && "
                       "chmod 755 /tmp/ubin/broken && /tmp/ubin/broken")
    assert code == 2 and "undefined: undefinedThing" in output, output

    # A changed source is rebuilt on the next call.
    program = "package main\\nimport \\\"fmt\\\"\\nfunc main() { fmt.Println(\\\"%s\\\") }\\n"
    output, code = run(f"mkdir -p /tmp/src/cmds/greet && printf \"{program % 'v1'}\" > /tmp/src/cmds/greet/main.go && "
                       "printf '#!/run/bm/bin/bmbuild /tmp/src/cmds/greet\\n' > /tmp/ubin/greet && "
                       "chmod 755 /tmp/ubin/greet && /tmp/ubin/greet")
    assert (output, code) == ("v1", 0), output
    output, code = run(f"printf \"{program % 'v2'}\" > /tmp/src/cmds/greet/main.go && "
                       "BMBUILD_VERBOSE=1 /tmp/ubin/greet")
    assert code == 0 and output.startswith("bmbuild: built greet in") and output.endswith("v2"), output
    assert "(go build: no plan)" in output, output  # a command of the user's: the go command builds it

    # Two shells calling a new command at once build it once.
    output, code = run("cp -r /tmp/src/cmds/cat /tmp/src/cmds/twice && "
                       "printf '#!/run/bm/bin/bmbuild /tmp/src/cmds/twice\\n' > /tmp/ubin/twice && "
                       "chmod 755 /tmp/ubin/twice && "
                       "(BMBUILD_VERBOSE=1 /tmp/ubin/twice /src/go.mod 2>/tmp/t1 >/dev/null & "
                       "BMBUILD_VERBOSE=1 /tmp/ubin/twice /src/go.mod 2>/tmp/t2 >/dev/null & wait); "
                       "cat /tmp/t1 /tmp/t2 | grep -c 'bmbuild: built twice'")
    assert (output, code) == ("1", 0), output

    # The shipped cache holds the standard library: a new program's build compiles that program alone.
    output, code = run("mkdir -p /tmp/hello && printf 'module hello\\n\\ngo 1.24\\n' > /tmp/hello/go.mod && "
                       f"printf '{HELLO}' > /tmp/hello/main.go && cd /tmp/hello && GOROOT=/go "
                       "GOCACHE=/run/bm/gocache GOFLAGS=-trimpath CGO_ENABLED=0 GOTOOLCHAIN=local HOME=/tmp "
                       "/run/bm/bin/go build -x -o /tmp/hello/hello . 2>/tmp/hello/log; cd /; "
                       f"grep -c 'pkg/tool/linux_{GUEST_DEBIAN_ARCH[arch]}/compile' /tmp/hello/log && /tmp/hello/hello")
    assert code == 0 and output.splitlines() == ["1", hashlib.sha256(b"bootmatrix").hexdigest()], output

    # A real program of the Go tree, compiled on demand from /go/src/cmd/gofmt.
    output, code = run("printf 'package main\\nfunc  main( ) {}\\n' > /tmp/x.go && gofmt /tmp/x.go")
    assert (output, code) == ("package main\n\nfunc main() {}", 0), output


@pytest.mark.parametrize("arch", ARCHES)
def test_system_commands_honour_their_options(
    bootmatrix_vms, image: GoSourceImage, arch: str, payload_server: PayloadServer
) -> None:
    """env, uname, ps, df, free, dmesg, poweroff and ip do what their options say (an unknown option is a
    usage error, exit 2); ip configures a NIC for real: the guest then downloads from the host."""
    digest = payload_server.add_payload("blob", 256 * 1024, seed=3)
    cell = gosource_cell(arch)
    guest = bootmatrix_vms(cell, nics=(UserNet(restrict=False),))
    run = lambda command, seconds=600: guest.console.run(command, Deadline.after(seconds))  # noqa: E731
    release = image.stage1[arch].kernel_release

    assert run("env X=41 sh -c 'echo $((X+1))'") == ("42", 0)
    assert run("env -i A=b env") == ("A=b", 0)
    assert run("env -u PATH env | grep -c ^PATH=")[0] == "0"
    assert run("env PATH=/nowhere env")[1] == 127  # a PATH that is given is the one searched
    assert run("env no-such-command")[1] == 127
    assert run("uname -r") == (release, 0) and run("uname -m") == (arch, 0) and run("uname") == ("Linux", 0)
    fields = run("uname -a")[0].split()
    assert fields[0] == "Linux" and fields[2] == release and fields[-1] == arch
    ps, code = run("ps -p 1")
    assert code == 0 and ps.splitlines()[1].split()[:2] == ["1", "0"], ps
    assert f"linux_{GUEST_DEBIAN_ARCH[arch]}/bin/init" in ps
    assert run("ps -p 99999")[1] == 1
    df, code = run("df -k /tmp")
    assert code == 0 and df.splitlines()[1].split()[0] == "tmpfs" and int(df.splitlines()[1].split()[1]) > 0, df
    free, code = run("free -m")
    total_mib = int(free.splitlines()[1].split()[1])
    assert code == 0 and cell.memory_mib * 0.7 < total_mib <= cell.memory_mib, free
    dmesg, code = run("dmesg | grep -c 'Linux version'")
    assert code == 0 and int(dmesg) >= 1
    for bad in ("uname -z", "df --bogus", "free -x", "ps -z", "dmesg -l nosuch", "ip bogus", "poweroff -x", "env -z"):
        assert run(f"{bad} 2>&1")[1] == 2, bad

    output, code = run("ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && "
                       "ip route add default via 10.0.2.2 dev eth0")
    assert code == 0, output
    assert run("ip -o -4 addr show dev eth0") == (
        "2: eth0   inet 10.0.2.15/24 brd 10.0.2.255 scope global eth0", 0)
    assert run("ip route show default") == ("default via 10.0.2.2 dev eth0", 0)
    assert "10.0.2.0/24 dev eth0 scope link" in run("ip route")[0]
    output, code = run(f"wget -O /tmp/blob {payload_server.url('/payload/blob')} && sha256sum /tmp/blob")
    assert code == 0 and output.splitlines()[-1] == f"{digest}  /tmp/blob", output
    # The harness reads leases back with ip: that works on this image's ip too.
    readback, _ = run(LEASE_READBACK.format(interface="eth0"))
    parsed = parse_lease("eth0", readback, 0.0)
    assert parsed is not None and (parsed.address, parsed.prefix, parsed.gateway) == ("10.0.2.15", 24, "10.0.2.2")


def test_a_changed_package_is_not_taken_from_the_plan(bootmatrix_vms) -> None:
    """The plan of uname names the compiled internal/utsname of the image: once that package's source
    differs (a tmpfs over its folder on the read-only root), the first call must build from the changed
    source with `go build`, and a later change to it must rebuild uname again."""
    guest = bootmatrix_vms(gosource_cell("riscv64"))
    run = lambda command: guest.console.run(command, Deadline.after(600))  # noqa: E731
    package = "/src/internal/utsname"
    output, code = run(f"cp -r {package} /tmp/utsname && mount -t tmpfs tmpfs {package} && "
                       f"cp /tmp/utsname/utsname.go {package}/ && "
                       f"printf 'func init() {{ println(\"changed once\") }}\\n' >> {package}/utsname.go")
    assert code == 0, output
    output, code = run("BMBUILD_VERBOSE=1 uname -m 2>&1")
    assert code == 0, output
    assert f"(go build: plan stale: {package}/utsname.go changed)" in output, output
    assert "changed once" in output and output.endswith(guest.cell.arch), output

    output, code = run(f"sleep 1 && printf 'func init() {{ println(\"changed twice\") }}\\n' >> {package}/utsname.go"
                       " && BMBUILD_VERBOSE=1 uname -m 2>&1")
    assert code == 0 and "bmbuild: built uname" in output and "changed twice" in output, output
    output, code = run("BMBUILD_VERBOSE=1 uname -m 2>&1")  # nothing changed since: not rebuilt
    assert code == 0 and "bmbuild: built" not in output and "changed twice" in output, output

    # The plan of another command that imports nothing changed is still taken.
    output, code = run("BMBUILD_VERBOSE=1 hostname 2>&1")
    assert code == 0 and "(plan: check" in output, output


def test_latency_gate_fails_a_slowed_build(bootmatrix_vms, record_property) -> None:
    """The gate judges real first-call times: the same kind of commands, built as they are and with the
    builder told to wait first (BMBUILD_DELAY), in one guest. The speed reference, timed with a minute's
    delay in force, is not slowed by it (it calls the go command, not our builder), so a slower builder
    cannot stretch its own budget. The wait is set past the median budget as stretched in this run: a busy
    host stretches the budget (CI once took the reference from 2.1 s to 5.25 s, x2.5), and a fixed 2.5 s
    wait then fell 0.02 s inside it."""
    budget = load_compile_budget(GOSOURCE_MATRIX)
    assert budget is not None
    guest = bootmatrix_vms(gosource_cell("riscv64"))
    wait_for_warmup(guest.console)
    plain = measure_calls(guest.console, {"date": "", "env": "", "hostname": ""})
    # Through our builder the reference would take a minute more; it takes seconds, and it built a program.
    guest.console.run("export BMBUILD_DELAY=60", Deadline.after(30))
    reference = speed_reference(guest.console)
    assert reference < 60, reference
    output, code = guest.console.run(f"[ -x {REFERENCE_OUTPUT} ] && [ -s {REFERENCE_OUTPUT} ]", Deadline.after(30))
    assert code == 0, output
    # The plain verdict is reported, not asserted: this test runs beside others on a loaded host, and
    # performance is judged by `bootmatrix run` and bench/compile_latency.py, not by a unit of `make test`.
    plain_verdict = judge_latency({name: t.first for name, t in plain.items()}, budget, guest.record.accel,
                                  reference=reference, arch="riscv64")
    delay = round(budget.for_accel(guest.record.accel).median * plain_verdict.factor + 1.0, 1)
    guest.console.run(f"export BMBUILD_DELAY={delay}", Deadline.after(30))
    slowed = measure_calls(guest.console, {"free": "", "sleep": "0", "touch": "/tmp/touched"})
    assert all(t.built for t in [*plain.values(), *slowed.values()])
    assert all(t.first >= delay for t in slowed.values())  # the delay is inside what is measured
    plain_median = statistics.median(t.first for t in plain.values())
    verdict = judge_latency({name: t.first for name, t in slowed.items()}, budget, guest.record.accel,
                            reference=reference, arch="riscv64")
    record_property("first_call_median_s", {"plain": plain_median, "slowed": verdict.median})
    record_property("speed_reference_s", reference)
    record_property("builder_delay_s", delay)
    record_property("plain_gate", plain_verdict.failures or "pass")
    assert verdict.factor == plain_verdict.factor  # one reference, one stretch for both
    assert not verdict.passed and "exceeds the" in verdict.failures[0], verdict


def test_image_is_bit_identical_when_built_twice(bootmatrix_lab: Lab, image: GoSourceImage, tmp_path: Path) -> None:
    """Everything again (Go root with its warm caches, programs, first stages, stick) in an empty store
    that shares only the downloaded packages: the same bytes."""
    share_downloads(bootmatrix_lab.store.root, tmp_path / "store")
    again = Lab(Store(tmp_path / "store")).gosource()
    assert again.key != "" and again.stick != image.stick
    assert _sha256(again.stick) == _sha256(image.stick)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_background_prebuild_builds_every_command(bootmatrix_vms, record_property) -> None:
    """bm.prebuild=1: after the marker, init builds every stubbed command at nice 19, smallest first."""
    guest = bootmatrix_vms(gosource_cell("riscv64", append="bm.prebuild=1"))
    deadline = Deadline.after(900)
    found = wait_for_log(guest.console, "/run/bm/prebuild.log", "prebuild of", 900)
    assert found is not None, "init wrote no /run/bm/prebuild.log"
    log = found[1]
    assert "bmbuild: prebuild of" in log and "done in" in log, log
    record_property("prebuild", log.splitlines()[-1])
    built = guest.console.run("ls /run/bm/cache/bin", deadline)[0].split()
    assert sorted(built) == sorted(command_sources()), built
    output, code = guest.console.run("BMBUILD_VERBOSE=1 uname 2>&1", deadline)
    assert code == 0 and "bmbuild: built" not in output, output  # already built: runs at once


# Not named `cell`: the plugin parametrizes that fixture name over the default matrix.
@pytest.mark.parametrize("stick_cell", [c for c in load_matrix(GOSOURCE_MATRIX) if c.media == "stick"],
                         ids=lambda c: c.id)
def test_firmware_boots_the_stick_and_its_root(bootmatrix_vms, stick_cell: Cell) -> None:
    """Through firmware and systemd-boot: kernel and first stage from the stick, then the root on it."""
    guest = bootmatrix_vms(stick_cell)
    output, code = guest.console.run("BMBUILD_VERBOSE=1 uname -m 2>&1", Deadline.after(300))
    assert code == 0 and output.startswith("bmbuild: built uname") and output.endswith(stick_cell.arch), output
    assert "initrd=\\" in guest.console.run("cat /proc/cmdline", Deadline.after(60))[0]  # systemd-boot's entry
