"""The README's test is a real one: its python block, run by pytest on one cell, passes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

README = Path(__file__).parents[2] / "README.md"


def test_the_readme_test_passes(pytester: pytest.Pytester, bootmatrix_results: Path) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    pytester.makepyfile(test_readme_block=block)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--bootmatrix-no-history",
                                           "--bootmatrix-cell", "riscv64-opensbi-direct",
                                           "--bootmatrix-results", str(bootmatrix_results / "readme"))
    result.assert_outcomes(passed=1)
