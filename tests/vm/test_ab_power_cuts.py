"""Power cuts during an A/B update (issue 24), a seeded sample of the sweep bench/ab_power_cuts.py
runs in full (make test's budget allows this much): a kill at a seeded moment of the download, and
the disk rebuilt from the write log of one whole update with seeded lost writes. After every cut the machine must
boot version 1 in slot a or version 2 in slot b, keep its data, take the next update and pass e2fsck
(matrix/ab_sweep.py says how each is judged).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.payload_server import PayloadServer
from matrix.ab_sweep import AbRig, crash_sample, table
from matrix.lab import Lab

pytestmark = pytest.mark.vm
ARCH = "x86_64"
SEED = 24  # another seed: bench/ab_power_cuts.py --seed N


@pytest.fixture
def rig(bootmatrix_lab: Lab, bootmatrix_results: Path, payload_server: PayloadServer,
        request: pytest.FixtureRequest) -> AbRig:
    workdir = bootmatrix_results / f"ab-power-cuts-{request.node.name}"
    workdir.mkdir(parents=True, exist_ok=True)
    return AbRig(bootmatrix_lab, bootmatrix_lab.ab_image(ARCH), "ovmf", payload_server, workdir)


def test_a_kill_in_the_download_phase_leaves_a_consistent_machine(rig: AbRig) -> None:
    phases = rig.calibrate()
    assert list(phases) == ["download", "verify", "entry switch", "reboot", "bless"], phases
    outcomes = list(rig.kill_sweep(phases, cuts=1, seed=SEED, only=("download",)))
    # The cut is aimed at a seeded offset into its phase; a phase faster than the calibration's can end
    # before it, so the test asks only that the cut fell inside the update.
    assert all(outcome.phase != "before the update" for outcome in outcomes), table(outcomes)
    assert all(outcome.consistent for outcome in outcomes), table(outcomes)


def test_a_disk_rebuilt_with_lost_writes_boots_a_consistent_slot(rig: AbRig) -> None:
    log, base = rig.logged_update()
    states = crash_sample(log, SEED, flush_points=0, lost=1)
    assert len(states) == 1
    outcomes = list(rig.log_sweep(states, log, base))
    assert all(outcome.consistent for outcome in outcomes), table(outcomes)
