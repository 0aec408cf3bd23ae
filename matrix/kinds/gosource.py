"""The mostly-source image: a busybox first stage switch_roots into a read-only VFAT root holding the Go
toolchain, its warm caches and the sources of every command, each compiled on its first call through a
build plan (images/recipes/gosource.py, goplans.py; images/guest/go/). Its cells are judged by the
compile gate too: every command of the sweep called twice, against the matrix file's [compile_budget]
and the history (matrix/latency.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from harness.machine import Machine
from images.debian.lock import busybox_set, go_set, kernel_set, shell_set
from images.recipes.firmware import FirmwareSet
from matrix.kinds import CheckVerdict, ImageKind, Readiness, RunCheck, register
from matrix.latency import FIRST_CALL_MEDIAN, CompileBudget, Sweep, judge_latency, run_sweep

if TYPE_CHECKING:
    from matrix.model import Cell
    from matrix.profiles import BootMedia
    from matrix.provision import Provisioner
    from matrix.record import BootRecord


class CompileSweep(RunCheck):
    """After the boot: call every command of the sweep twice; then judge the first calls."""

    def __init__(self, cell: Cell, budget: CompileBudget):
        self.cell, self.budget = cell, budget
        self.accel = ""
        self.sweep: Sweep | None = None  # None: the guest was not swept (the boot failed, or the sweep did)
        self.error = ""

    def after_boot(self, machine: Machine, record: BootRecord) -> None:
        self.accel = record.accel
        try:
            self.sweep = run_sweep(machine.console)
        except RuntimeError as error:
            self.error = str(error)

    def verdict(self, baseline: Callable[[str, int], float | None]) -> CheckVerdict:
        if self.error:
            return CheckVerdict([f"compile sweep failed: {self.error}"])
        if self.sweep is None:
            return CheckVerdict()
        calls = self.sweep.calls
        verdict = judge_latency({name: t.judged for name, t in calls.items()}, self.budget, self.accel,
                                baseline(FIRST_CALL_MEDIAN, self.budget.min_runs), self.sweep.reference,
                                self.cell.arch)
        not_built = sorted(name for name, t in calls.items() if not t.built)
        failures = [f"{self.cell.id}: {failure}" for failure in verdict.failures] + (
            [f"{self.cell.id}: not built on first call, or rebuilt on the second: {not_built}"] if not_built else [])
        return CheckVerdict(
            failures, {FIRST_CALL_MEDIAN: verdict.median}, f"{verdict.median:.2f}/{verdict.slowest:.2f}",
            {"compile": {name: asdict(times) for name, times in calls.items()}, "warmup_wait": self.sweep.warmup,
             "compile_median": verdict.median, "compile_max": verdict.slowest,
             "speed_reference": self.sweep.references, "speed_reference_s": self.sweep.reference,
             "budget_factor": verdict.factor,
             "compared_with": verdict.compared},
        )


class GoSource(ImageKind):
    name = "gosource"
    summary_column = "compile med/max"
    metrics = (FIRST_CALL_MEDIAN,)

    def media(self, lab: Provisioner, cell: Cell, firmware: FirmwareSet | None) -> BootMedia:
        from matrix.profiles import BootMedia

        image = lab.gosource()
        # The first stage (kernel + busybox initramfs) for direct boots; its VFAT root is on the stick,
        # attached to direct boots too.
        return BootMedia(image.stage1[cell.arch], firmware, image.stick)

    def readiness(self, lab: Provisioner, cell: Cell) -> Readiness:
        return Readiness.of_image(lab.gosource().stage1[cell.arch])

    def package_sets(self, lab: Provisioner, cell: Cell) -> list[str]:
        return [kernel_set(cell.arch), busybox_set(cell.arch), go_set(cell.arch), shell_set(cell.arch)]

    def run_check(self, cell: Cell, matrix_file: Path) -> RunCheck | None:
        from matrix.model import load_compile_budget

        budget = load_compile_budget(matrix_file)
        return CompileSweep(cell, budget) if budget is not None else None


GOSOURCE = register(GoSource())
