"""`bootmatrix init [DIR]`: a starter for a user's own repository, every file of which works as written:
a matrix file, a test using `vm` and `cell`, pytest configuration naming the matrix through the
`bootmatrix_matrix` ini option, and CI for GitHub Actions and GitLab CI that keeps the artifact cache
between runs (keyed by the lock's hash, `bootmatrix lock --hash`) and shards with pytest-split.

Nothing is overwritten: an existing file is left as it is and named.
"""

from __future__ import annotations

from pathlib import Path

MATRIX = """\
# The boot matrix of this repository: one cell per arch x firmware (x media). `bootmatrix list` shows
# the cells; each test that takes `cell` runs once per cell. Keys: docs/matrix.md of bootmatrix.
[defaults]
memory_mib = 512

[[cell]]
arch = "x86_64"
firmware = "seabios"

[[cell]]
arch = "aarch64"
firmware = "virt"

[[cell]]
arch = "riscv64"
firmware = "opensbi"

# A cell of your own kernel (paths are relative to this file), with bootmatrix's initramfs:
# [[cell]]
# arch = "riscv64"
# firmware = "opensbi"
# kernel = "build/riscv64/Image"
# initrd = { image = "minimal" }
"""

TEST = '''\
"""Boot tests of this repository: each runs once per cell of boot.toml (pytest -n auto runs cells at once)."""

import pytest

pytestmark = pytest.mark.vm

MACHINE = {"x86_64": "x86_64", "aarch64": "aarch64", "riscv64": "riscv64"}


def test_boots_to_a_shell_of_its_arch(vm, cell):
    guest = vm()  # booted to a shell (or restored from the cell's snapshot); stopped after the test
    output, code = guest.run("uname -m")
    assert (output, code) == (MACHINE[cell.arch], 0)
'''

PYTEST_INI = """\
[pytest]
testpaths = tests
# bootmatrix's pytest plugin: the matrix this repository boots (a path relative to here, or a shipped
# matrix's name); --bootmatrix-matrix on the command line wins.
bootmatrix_matrix = boot.toml
bootmatrix_results = results
"""

GITHUB = """\
# Boot tests on GitHub Actions: 2 shards (pytest-split), the artifact cache kept between runs.
name: boot
on: [push, pull_request]
jobs:
  boot:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        group: [1, 2]
    env:
      BOOTMATRIX_CACHE: ${{ github.workspace }}/.bootmatrix-cache
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install bootmatrix
      - run: sudo "$(command -v bootmatrix)" doctor --fix
      - id: lock
        run: echo "hash=$(bootmatrix lock --hash)" >> "$GITHUB_OUTPUT"
      - uses: actions/cache@v4
        with:
          path: .bootmatrix-cache
          key: bootmatrix-${{ runner.os }}-${{ steps.lock.outputs.hash }}
      - run: pytest -n auto --splits 2 --group ${{ matrix.group }}
      - uses: actions/upload-artifact@v4
        if: always()
        with:
          name: boot-results-${{ matrix.group }}
          path: results/
"""

GITLAB = """\
# Boot tests on GitLab CI: 2 shards (pytest-split), the artifact cache kept between runs.
boot:
  image: debian:bookworm
  parallel: 2
  variables:
    BOOTMATRIX_CACHE: $CI_PROJECT_DIR/.bootmatrix-cache
  before_script:
    - apt-get update -q && apt-get install -y -q python3-venv
    - python3 -m venv /venv && /venv/bin/pip install bootmatrix
    - /venv/bin/bootmatrix doctor --fix
    # The cache key is read before this runs, so it comes from a committed file: `bootmatrix init` wrote
    # it; after upgrading bootmatrix, `bootmatrix lock --hash > .bootmatrix-lock-hash` (a stale key only
    # means the cache also holds entries no longer used).
  cache:
    key:
      files: [.bootmatrix-lock-hash]
    paths: [.bootmatrix-cache]
  script:
    - /venv/bin/pytest -n auto --splits "$CI_NODE_TOTAL" --group "$CI_NODE_INDEX"
  artifacts:
    when: always
    paths: [results/]
"""

FILES = {
    "boot.toml": MATRIX,
    "tests/test_boot.py": TEST,
    "pytest.ini": PYTEST_INI,
    ".github/workflows/boot.yml": GITHUB,
    ".gitlab-ci.yml": GITLAB,
}


def write_starter(folder: Path, lock_hash: str) -> tuple[list[Path], list[Path]]:
    """Write the starter into `folder`: (files written, files left as they were)."""
    written, kept = [], []
    for relative, text in {**FILES, ".bootmatrix-lock-hash": lock_hash + "\n"}.items():
        path = folder / relative
        if path.exists():
            kept.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written, kept
