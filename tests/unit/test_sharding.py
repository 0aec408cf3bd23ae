"""Sharding over N CI runners with pytest-split: every test runs on exactly one runner, and a stored
durations file balances the shards (README: "Running on N CI runners")."""

from __future__ import annotations

import json
import re

import pytest

SUITE = "\n".join(f"def test_{i}():\n    pass\n" for i in range(10))


def collected(result: pytest.RunResult) -> set[str]:
    return set(re.findall(r"test_suite\.py::(test_\d+) PASSED", result.stdout.str()))


def test_shards_cover_every_test_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    durations = {f"test_suite.py::test_{i}": 10.0 if i == 0 else 1.0 for i in range(10)}
    (pytester.path / ".test_durations").write_text(json.dumps(durations))
    shards = []
    for group in (1, 2):
        result = pytester.runpytest("-v", "-p", "no:randomly", "--splits", "2", "--group", str(group),
                                    "--durations-path", ".test_durations", "--bootmatrix-no-history")
        result.assert_outcomes(passed=len(collected(result)))
        shards.append(collected(result))
    assert shards[0] | shards[1] == {f"test_{i}" for i in range(10)}
    assert not shards[0] & shards[1]
    # The 10 s test is balanced against the nine 1 s tests.
    assert {len(shards[0]), len(shards[1])} == {1, 9}
