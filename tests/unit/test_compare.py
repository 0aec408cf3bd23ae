"""The firmware regression verdict: pass/fail changes and slowdowns beyond noise, nothing else."""

from __future__ import annotations

from matrix.compare import Sample, Summary, judge


def summary(firmware_set: str, kernel_times: list[float], failures: int = 0) -> Summary:
    samples = [Sample(True, {"kernel": t, "ready": t + 2}) for t in kernel_times]
    samples += [Sample(False, {}, "kernel panic on the console: Kernel panic") for _ in range(failures)]
    return Summary(firmware_set, samples)


def test_same_speed_is_no_regression() -> None:
    assert judge(summary("old", [1.0, 1.1, 1.05]), summary("new", [1.02, 1.08, 1.1])) is None


def test_failing_only_with_the_candidate_is_a_regression() -> None:
    verdict = judge(summary("old", [1.0, 1.0, 1.0]), summary("new", [1.0, 1.0], failures=1))
    assert verdict is not None
    assert "passes with old (3/3 pass) but fails with new (2/3 pass): kernel panic" in verdict


def test_failing_with_both_is_not_a_firmware_regression() -> None:
    assert judge(summary("old", [1.0], failures=2), summary("new", [1.0], failures=2)) is None


def test_clearly_slower_firmware_phase_is_a_regression() -> None:
    verdict = judge(summary("old", [1.0, 1.1, 1.2]), summary("new", [2.0, 2.1, 2.2]))
    assert verdict is not None and "median 2.10 s vs 1.10 s" in verdict and "+91 %" in verdict


def test_overlapping_samples_are_noise_even_with_a_slower_median() -> None:
    # Median 1.9 vs 1.1, but the baseline once took 2.5 s: the ranges overlap, so no verdict.
    assert judge(summary("old", [1.0, 1.1, 2.5]), summary("new", [1.8, 1.9, 2.0])) is None


def test_small_absolute_differences_are_within_slack() -> None:
    # +50 % but only 0.1 s on a 0.2 s phase: under the 0.25 s slack.
    assert judge(summary("old", [0.2, 0.2, 0.2]), summary("new", [0.3, 0.3, 0.3])) is None


def test_unavailable_cells_are_not_judged() -> None:
    missing = Summary("bookworm", unavailable="firmware set bookworm has no UEFI firmware for riscv64")
    assert judge(missing, summary("trixie", [1.0])) is None
    assert missing.result() == "unavailable"
