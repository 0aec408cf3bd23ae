"""Firmware regression check, one test per firmware cell, collected only with --bootmatrix-baseline-set:

    pytest tests/vm/test_firmware_regression.py --bootmatrix-baseline-set bookworm [--bootmatrix-repeat 5]

boots each cell with the baseline firmware set and with its own (trixie by default), and fails a cell
that passes with the baseline and fails with its own set, or whose firmware phase is slower beyond
noise (matrix/compare.py says exactly when). `bootmatrix compare` prints the same as a table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from matrix.compare import judge, sample_cell
from matrix.lab import Lab
from matrix.model import Cell
from matrix.plugin import cannot_run
from matrix.profiles import needs_firmware_set

# Firmware is the point of these tests: every VM boots cold, never from a snapshot.
pytestmark = [pytest.mark.vm, pytest.mark.bootmatrix_option("--bootmatrix-baseline-set"), pytest.mark.bootmatrix_cold]


@pytest.mark.bootmatrix_cells(where=needs_firmware_set)
def test_no_firmware_regression(cell: Cell, bootmatrix_lab: Lab, bootmatrix_results: Path,
                                request: pytest.FixtureRequest) -> None:
    baseline_set = request.config.getoption("--bootmatrix-baseline-set")
    repeat = request.config.getoption("--bootmatrix-repeat")
    folder = bootmatrix_results / "firmware-regression"
    baseline = sample_cell(bootmatrix_lab, cell, baseline_set, repeat, folder)
    candidate = sample_cell(bootmatrix_lab, cell, cell.firmware_set, repeat, folder)
    for summary in (baseline, candidate):
        if summary.unavailable:
            message = f"{cell.id} with {summary.firmware_set}: {summary.unavailable}"
            if summary is candidate:
                cannot_run(request.config, message)
            pytest.skip(message)  # the baseline set lacks this firmware (bookworm: no riscv64 edk2)
    verdict = judge(baseline, candidate)
    assert verdict is None, verdict
