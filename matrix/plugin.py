"""The pytest plugin (registered through the `pytest11` entry point as `bootmatrix`).

- A test that asks for `cell` runs once per matrix cell, with the cell id as its pytest id.
- `vm` is a factory: `vm()` starts the cell's machine and boots it to a shell; `vm(boot=False)` only
  starts it. Every machine gets a work folder under the results folder that keeps its console
  transcript, QEMU argv, QMP events and boot record; all machines are stopped at the end of the test.
- Images come from the session-wide Lab, whose store builds each one once across xdist workers.
- A cell that cannot run here (no QEMU binary, packages unreachable) is an error naming the reason;
  BOOTMATRIX_STRICT=0 (or --bootmatrix-no-strict) makes it a skip instead. Strict mode is also locked:
  a locked Debian package gone from the mirror fails instead of being re-resolved.
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest

from harness.accel import BadSetting, forced_accel
from harness.errors import MachineError
from harness.guestnet import DEFAULT_DHCP
from harness.hostinfo import VM_MEMORY_BUDGET, memory_available_bytes
from harness.machine import Machine, live_machines
from harness.net import Nic
from harness.paths import CannotWrite, writable_folder
from harness.payload_server import PayloadServer
from harness.qemu import watch_launches
from harness.spec import MachineSpec
from images.tools import ToolMissing, host_tool
from matrix.history import HISTORY_ENV, History, Metric
from matrix.lab import CellError, Lab, Unavailable
from matrix.model import (
    DEFAULT_MATRIX,
    FIRMWARE_SETS,
    SHIPPED_MATRICES,
    Cell,
    MatrixError,
    load_matrix,
    matches,
    matrix_path,
    select,
)
from matrix.record import BootRecord
from matrix.report import attach_vm_to_allure, timeline_svg
from matrix.vm import VM

STRICT_ENV = "BOOTMATRIX_STRICT"
SNAPSHOTS_ENV = "BOOTMATRIX_SNAPSHOTS"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bootmatrix", "bootmatrix QEMU boot matrix")
    group.addoption("--bootmatrix-matrix", default=None,
                    help="matrix file or shipped matrix name (default: the bootmatrix_matrix ini option, else default)")
    # The same in a project's own pytest configuration ([tool.pytest.ini_options], pytest.ini), so a
    # repository names its matrix once; a command-line option wins.
    parser.addini("bootmatrix_matrix", "matrix file (relative to the rootdir) or shipped matrix name", default="")
    parser.addini("bootmatrix_results", "where VM work folders go (relative to the rootdir)", default="")
    parser.addini("bootmatrix_arch", "only cells of these arches", type="args", default=[])
    group.addoption("--bootmatrix-arch", action="append", default=[], help="only cells of this arch (repeatable)")
    group.addoption("--bootmatrix-cell", action="append", default=[], help="only this cell id (repeatable)")
    group.addoption("--bootmatrix-qemu", choices=["pinned", "host"], default=None, help="override every cell's QEMU")
    group.addoption("--bootmatrix-results", type=Path, default=None, help="where VM work folders go (./results)")
    group.addoption(
        "--bootmatrix-baseline-set", choices=list(FIRMWARE_SETS), default=None,
        help="firmware regression check: boot each firmware cell with this set and with the cell's own, and "
        "fail a cell that only fails with its own or whose firmware phase is slower beyond noise",
    )
    group.addoption("--bootmatrix-repeat", type=int, default=3, help="boots per set in the regression check")
    group.addoption("--bootmatrix-history", type=Path, default=None,
                    help="SQLite metric history (default: BOOTMATRIX_HISTORY or the user data dir)")
    group.addoption("--bootmatrix-no-history", action="store_true", default=False, help="record no metrics")
    group.addoption(
        "--bootmatrix-strict", action="store_true", default=None,
        help="a cell that cannot run here is an error (the default), and the lock must hold",
    )
    group.addoption(
        "--bootmatrix-no-strict", dest="bootmatrix_strict", action="store_false",
        help=f"opt out: a cell that cannot run here is skipped with the reason (also: {STRICT_ENV}=0), and "
        "a locked package gone from the mirror is re-resolved with a warning",
    )
    group.addoption(
        "--bootmatrix-no-snapshots", action="store_true", default=False,
        help=f"boot every VM cold instead of restoring snapshots (also: {SNAPSHOTS_ENV}=0)",
    )
    group.addoption(
        "--bootmatrix-locked", action="store_true", default=False,
        help="a locked Debian package gone from the mirror is an error (implied by strict mode)",
    )


class SnapshotFallback(UserWarning):
    """A VM that should have been restored from a snapshot was booted cold (the reason is the message)."""


def snapshots_on(config: pytest.Config) -> bool:
    """VMs start from snapshots where a test allows it, unless --bootmatrix-no-snapshots or
    BOOTMATRIX_SNAPSHOTS=0."""
    return not config.getoption("--bootmatrix-no-snapshots") and os.environ.get(SNAPSHOTS_ENV, "1") != "0"


def strict(config: pytest.Config) -> bool:
    """Strict unless the user opts out with --bootmatrix-no-strict or BOOTMATRIX_STRICT=0."""
    option = config.getoption("bootmatrix_strict")
    if option is not None:
        return bool(option)
    return os.environ.get(STRICT_ENV, "1") != "0"


def locked(config: pytest.Config) -> bool | None:
    """Locked in strict mode or when asked; otherwise BOOTMATRIX_LOCKED decides (None)."""
    return True if strict(config) or config.getoption("--bootmatrix-locked") else None


def cannot_run(config: pytest.Config, reason: str) -> NoReturn:
    """What cannot run here: an error naming the reason, or a skip where the user opted out."""
    if strict(config):
        pytest.fail(f"{reason} (BOOTMATRIX_STRICT=0 makes this a skip)", pytrace=False)
    pytest.skip(reason)


def cell_error(config: pytest.Config, cell: Cell, error: CellError) -> NoReturn:
    """The one place the plugin turns the lab's CellError into a test outcome: cannot run here (an
    error in strict mode, else a skip) or broken (a failure)."""
    if error.cannot_run:
        cannot_run(config, f"{cell.id} cannot run here: {error}")
    pytest.fail(str(error) if error.detail == str(error) else f"{error}\n{error.detail}", pytrace=False)


def matrix_of(config: pytest.Config) -> Path:
    """--bootmatrix-matrix, else the bootmatrix_matrix ini option (relative to the rootdir), else the
    default matrix; a shipped matrix may be named instead of a path."""
    given = config.getoption("--bootmatrix-matrix")
    if given:
        return matrix_path(given)
    configured = str(config.getini("bootmatrix_matrix"))
    if configured:
        chosen = matrix_path(configured)
        return chosen if chosen.is_absolute() or chosen.parent == SHIPPED_MATRICES else config.rootpath / chosen
    return DEFAULT_MATRIX


def selected_cells(config: pytest.Config) -> list[Cell]:
    path = matrix_of(config)
    arches = config.getoption("--bootmatrix-arch") or list(config.getini("bootmatrix_arch"))
    try:
        cells = select(load_matrix(path), arches, config.getoption("--bootmatrix-cell"))
    except MatrixError as error:
        raise pytest.UsageError(str(error)) from None
    qemu = config.getoption("--bootmatrix-qemu")
    if qemu:
        cells = sorted({c.model_copy(update={"qemu": qemu}) for c in cells}, key=lambda c: c.id)
    return cells


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: boots a real QEMU guest")
    config.addinivalue_line(
        "markers",
        "bootmatrix_cells(**filters): run a `cell` test only for cells whose fields match "
        "(a list means any of its values; where=predicate(cell)), e.g. "
        "bootmatrix_cells(media='direct', arch=['riscv64'])",
    )
    config.addinivalue_line(
        "markers",
        "bootmatrix_cold: every VM of the test boots cold (firmware, timelines, panics, power paths); "
        "otherwise `vm()` of our minimal image starts from the cell's snapshot",
    )
    config.addinivalue_line(
        "markers",
        "bootmatrix_needs(tool, packages, purpose): the test needs this host tool; without it, an error "
        "naming the Debian packages (a skip with BOOTMATRIX_STRICT=0), as for a cell that cannot run here",
    )
    config.addinivalue_line(
        "markers",
        "bootmatrix_option(name): collect the test only when this command-line option is given (it is "
        "deselected otherwise, not skipped), e.g. bootmatrix_option('--bootmatrix-baseline-set')",
    )
    # Settings a session cannot run with are usage errors, one line each, before anything is collected.
    try:
        forced_accel()
        if config.getoption("--bootmatrix-results", None) is not None or config.getini("bootmatrix_results"):
            writable_folder(results_root(config), "--bootmatrix-results")
    except (BadSetting, CannotWrite) as error:
        raise pytest.UsageError(str(error)) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" in metafunc.fixturenames:
        cells = selected_cells(metafunc.config)
        for marker in metafunc.definition.iter_markers("bootmatrix_cells"):
            cells = [c for c in cells if matches(c, marker.kwargs)]
        metafunc.parametrize("cell", cells, ids=[c.id for c in cells])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        options = [m.args[0] for m in item.iter_markers("bootmatrix_option")]
        (wanted if all(config.getoption(o) for o in options) else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = wanted
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if {"vm", "bootmatrix_vms", "bootmatrix_lab"} & set(fixtures):
            item.add_marker(pytest.mark.vm)


UNMARKED_LAUNCHES = pytest.StashKey[list[str]]()  # what a test without the `vm` marker tried to start


class UnmarkedQemuLaunch(Exception):
    """A test without the `vm` marker started a real QEMU: `-m "not vm"` would boot guests."""


def _real_qemu(argv: Sequence[str]) -> str | None:
    """The QEMU binary `argv` runs when it is a real one (an ELF file named qemu-system-*), else None:
    a stand-in script a unit test writes is not a VM."""
    for word in argv:
        path = Path(word)
        if path.name.startswith("qemu-system") and path.is_file():
            with path.open("rb") as handle:
                return str(path) if handle.read(4) == b"\x7fELF" else None
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Every QEMU a test starts is checked: one without the `vm` marker fails, naming the binary."""
    if item.get_closest_marker("vm") is not None:
        yield
        return
    seen: list[str] = []

    def refuse(argv: Sequence[str]) -> None:
        binary = _real_qemu(argv)
        if binary is None:
            return
        message = (f"{item.nodeid} starts QEMU ({Path(binary).name}) without the `vm` marker: mark it "
                   "pytest.mark.vm, so `-m 'not vm'` starts no QEMU")
        seen.append(message)
        raise UnmarkedQemuLaunch(message)

    item.stash[UNMARKED_LAUNCHES] = seen
    stop_watching = watch_launches(refuse)
    try:
        yield
    finally:
        stop_watching()


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("bootmatrix_needs"):
        try:
            host_tool(*marker.args)
        except ToolMissing as error:
            cannot_run(item.config, str(error))




def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: one worker per core, but no more than free memory holds VMs (two per worker at most)."""
    available = memory_available_bytes()
    if available is None:
        return None
    cores = os.cpu_count() or 1
    return max(1, min(cores, int(available // (2 * VM_MEMORY_BUDGET))))


def results_root(config: pytest.Config) -> Path:
    """Where sessions' results go: --bootmatrix-results, else results/ beside the rootdir's tests."""
    configured = str(config.getini("bootmatrix_results"))
    return Path(config.getoption("--bootmatrix-results") or (config.rootpath / configured if configured else None)
                or Path(config.rootpath) / "results")


def session_name(config: pytest.Config) -> str:
    """This session's own results folder name (`pytest-<date>-<time>-<random>`), shared by its xdist
    workers (the controller hands it over in workerinput), so two sessions in one checkout never share
    a work folder or a QEMU pidfile."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "bootmatrix_session" in workerinput:
        return str(workerinput["bootmatrix_session"])
    if not hasattr(config, "_bootmatrix_session"):
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        config._bootmatrix_session = f"pytest-{stamp}-{uuid.uuid4().hex[:6]}"  # type: ignore[attr-defined]
    return str(config._bootmatrix_session)  # type: ignore[attr-defined]


def session_results(config: pytest.Config) -> Path:
    return results_root(config) / session_name(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: every worker writes into the controller's session folder."""
    node.workerinput["bootmatrix_session"] = session_name(node.config)


def _link_latest(config: pytest.Config) -> None:
    """results/latest -> this session's folder (replaced atomically; a later session moves it on)."""
    root = results_root(config)
    temporary = root / f".latest-{session_name(config)}-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(session_name(config), target_is_directory=True)
    os.replace(temporary, root / "latest")


def run_id(config: pytest.Config) -> str:
    """One id for the whole session: xdist gives its workers a shared testrunuid."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return str(workerinput["testrunuid"])
    if not hasattr(config, "_bootmatrix_run_id"):
        config._bootmatrix_run_id = uuid.uuid4().hex  # type: ignore[attr-defined]
    return str(config._bootmatrix_run_id)  # type: ignore[attr-defined]


def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        cells = selected_cells(config)
    except pytest.UsageError:
        return []
    return [f"bootmatrix cells: {', '.join(c.id for c in cells) or '(none selected)'}"]


@pytest.fixture(scope="session")
def bootmatrix_lab(request: pytest.FixtureRequest) -> Lab:
    return Lab(locked=locked(request.config))


def history_path(config: pytest.Config) -> Path:
    """--bootmatrix-history or BOOTMATRIX_HISTORY when given; otherwise a file of this session's own
    (results/<session>/history.sqlite), so a test run never feeds the history `bootmatrix run` gates on."""
    chosen = config.getoption("--bootmatrix-history") or os.environ.get(HISTORY_ENV)
    return Path(chosen) if chosen else session_results(config) / "history.sqlite"


@pytest.fixture(scope="session")
def bootmatrix_history(request: pytest.FixtureRequest) -> History | None:
    if request.config.getoption("--bootmatrix-no-history"):
        return None
    return History(history_path(request.config))


@pytest.fixture(scope="session")
def bootmatrix_results(request: pytest.FixtureRequest) -> Path:
    """This session's results folder: results/<session>/ (results/latest points at the newest)."""
    path = session_results(request.config)
    path.mkdir(parents=True, exist_ok=True)
    _link_latest(request.config)  # every worker may: they all point it at the same folder
    return path


@pytest.fixture
def payload_server() -> Iterator[PayloadServer]:
    """An HTTP server on 127.0.0.1 for this test: known payloads, error statuses, recorded requests."""
    with PayloadServer() as server:
        yield server


def _test_dir(results: Path, nodeid: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.replace("::", "__")).strip("_")
    return results / safe


def _fresh_dir(folder: Path) -> Path:
    """`folder`, or `folder-2`, `-3`, ... when a test of this session ran before under that id (a rerun):
    nothing of a session is ever deleted or reused."""
    candidate, number = folder, 1
    while candidate.exists():
        number += 1
        candidate = folder.with_name(f"{folder.name}-{number}")
    return candidate


VMFactory = Callable[..., VM]


@pytest.fixture
def bootmatrix_vms(
    request: pytest.FixtureRequest, bootmatrix_lab: Lab, bootmatrix_results: Path, bootmatrix_history: History | None
) -> Iterator[VMFactory]:
    """Factory of guests for any cell: `bootmatrix_vms(cell, name=, boot=, nics=, customize=, cold=)`.

    A booted VM of our minimal image starts from the cell's snapshot (booted once, saved at its shell,
    keyed by the machine after `customize`, and after the shell command `prepare=` when given) unless the
    test is marked `bootmatrix_cold`, asks `cold=True`, or snapshots are off (--bootmatrix-no-snapshots,
    BOOTMATRIX_SNAPSHOTS=0); its timeline then has the phases process, incoming and ready, and
    `guest.record.snapshot` names the snapshot.

    `customize(spec) -> spec` changes the MachineSpec before launch (a negative test swaps a disk or a
    flash bank). `boot=False` returns the machine started, not waited on. Every machine is stopped at
    the end of the test; their work folders stay under the results folder.
    """
    test_dir = _fresh_dir(_test_dir(bootmatrix_results, request.node.nodeid))
    started: list[VM] = []

    wants_cold = request.node.get_closest_marker("bootmatrix_cold") is not None or not snapshots_on(request.config)

    def factory(
        cell: Cell,
        name: str = "vm",
        boot: bool = True,
        nics: tuple[Nic, ...] = (),
        customize: Callable[[MachineSpec], MachineSpec] | None = None,
        *,
        cold: bool = False,
        prepare: str = "",
    ) -> VM:
        if boot and not cold and not wants_cold and bootmatrix_lab.restorable(cell):
            restored = _restore(cell, name, nics, customize, prepare)
            if restored is not None:
                return restored
            name_dir = f"{name}-cold"  # the failed restore keeps its own folder
        else:
            name_dir = name
        try:
            machine, record = bootmatrix_lab.machine(cell, test_dir / name_dir, name, nics, customize=customize,
                                                     booted=boot)
        except CellError as error:
            cell_error(request.config, cell, error)
        guest = _guest(machine, record, cell)
        machine.start()
        if boot:
            bootmatrix_lab.boot(machine, record, guest.deadline())
            if prepare:  # what a restored VM's snapshot holds, done here for a cold one
                output, code = guest.run(prepare)
                if code != 0:
                    pytest.fail(f"{cell.id}: prepare {prepare!r} exited {code}: {output}", pytrace=False)
        return guest

    def _guest(machine: Machine, record: BootRecord, cell: Cell) -> VM:
        """The test's handle on a machine, in the list of VMs stopped and reported at teardown."""
        readiness = record.readiness
        guest = VM(machine, record, cell, bootmatrix_lab.boot_budget(cell, record.accel),
                   readiness.dhcp_command if readiness is not None else DEFAULT_DHCP)
        started.append(guest)
        return guest

    def _restore(
        cell: Cell, name: str, nics: tuple[Nic, ...], customize: Callable[[MachineSpec], MachineSpec] | None,
        prepare: str,
    ) -> VM | None:
        """A VM started from the cell's snapshot, or None (with a warning) when that failed: the snapshot
        is dropped (rebuilt next time) and the caller boots cold. Never a silently wrong VM: a restore
        either answers on a fresh console round trip or is not used."""
        machine = None
        try:
            machine, record = bootmatrix_lab.machine(cell, test_dir / name, name, nics, restore=True,
                                                     customize=customize, prepare=prepare)
            guest = _guest(machine, record, cell)
            bootmatrix_lab.resume(machine, record, guest.deadline())
            return guest
        except Unavailable as error:  # cannot run here: no cold boot would do better
            cell_error(request.config, cell, error)
        except (MachineError, CellError, OSError) as error:
            warnings.warn(f"{cell.id}: restoring from a snapshot failed, booting cold instead: "
                          f"{str(error).splitlines()[0]}", SnapshotFallback, stacklevel=3)
            if machine is not None:
                machine.stop(check=False, told=True)  # reported here, as this warning
                # Its folder stays; its half-made timeline goes into no report or history.
                started[:] = [g for g in started if g.machine is not machine]
                bootmatrix_lab.forget_snapshot(Path(record.snapshot))
            return None

    yield factory
    problems = [problem for guest in started for problem in _stop(guest)]
    for guest in started:
        try:
            _report(guest, request, bootmatrix_history)
        except Exception as error:  # noqa: BLE001 - any report step (allure, a busy SQLite file, the SVG)
            problems.append(f"{guest.machine.name}: reporting failed: {error!r}")
        problems += _abnormal(guest)
    request.node.user_properties.append(("bootmatrix_workdirs", [str(g.workdir) for g in started]))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def _stop(guest: VM) -> list[str]:
    """Stop one guest; a failure is returned, not raised, so every other guest of the test is stopped too."""
    try:
        guest.machine.stop(check=False)
    except (MachineError, OSError, RuntimeError) as error:
        guest.machine.kill()
        return [f"{guest.machine.name}: stopping it failed: {error!r}"]
    return []


def _abnormal(guest: VM) -> list[str]:
    """The machine's end, judged in memory: an abnormal one no wait or stop had reported (QEMU killed, a
    bad status or a guest panic before teardown), with the console tail, fails the test."""
    abnormal = guest.end.unreported if guest.end is not None else None
    if abnormal is None:
        return []  # never started, a normal end, or one the test was told of
    tail = guest.machine.tail()
    return [f"{guest.machine.name}: {abnormal}\n--- console tail ---\n{tail.rstrip()[-2000:]}\n--- end of tail ---"]


def _report(guest: VM, request: pytest.FixtureRequest, history: History | None) -> None:
    """Timeline chart, allure parameters/steps/attachments, and metric history rows for one guest."""
    milestones = guest.machine.timeline.as_dict()
    (guest.workdir / "timeline.svg").write_text(timeline_svg(f"{guest.cell.id} ({guest.machine.name})", milestones))
    metrics = {f"t_{phase}": (t, "s") for phase, t in milestones.items()} | guest.metrics
    parameters = {"cell": guest.cell.id, "arch": guest.cell.arch, "firmware": guest.cell.firmware,
                  "media": guest.cell.media, "firmware set": guest.cell.firmware_set,
                  "accelerator": guest.record.accel, "QEMU": f"{guest.record.qemu} {guest.record.qemu_version}"}
    attach_vm_to_allure(guest.workdir, guest.machine.name, milestones, {k: v for k, (v, _) in metrics.items()},
                        parameters)
    if history is not None and metrics:
        history.record(run_id(request.config), "pytest", [
            Metric(guest.cell.id, name, value, unit, guest.record.qemu_version, guest.cell.firmware_set,
                   guest.record.accel, request.node.nodeid, guest.record.config)
            for name, (value, unit) in metrics.items()
        ])


@pytest.fixture
def vm(cell: Cell, bootmatrix_vms: VMFactory) -> VMFactory:
    """Factory of booted guests of this test's cell; a test that uses it runs once per selected cell.
    `vm(other_cell)` boots another cell instead; keyword arguments are those of bootmatrix_vms."""

    def factory(other_cell: Cell | None = None, **options: object) -> VM:
        return bootmatrix_vms(other_cell or cell, **options)

    return factory


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    unmarked = item.stash.get(UNMARKED_LAUNCHES, [])
    if unmarked and report.when == "call" and report.passed:  # the test caught the refusal: still a failure
        report.outcome = "failed"
        report.longrepr = unmarked[0]
    if report.when == "call" and report.failed:
        folder = _test_dir(session_results(item.config), item.nodeid)
        if folder.exists():
            report.sections.append(("bootmatrix", f"VM logs (console.log, argv.txt, qmp-events.jsonl): {folder}"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = live_machines()
    for machine in leaked:
        machine.kill()
    if leaked:
        names = ", ".join(f"{m.name} in {m.workdir}" for m in leaked)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"bootmatrix: killed {len(leaked)} QEMU process(es) a test left running: {names}"
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
