"""Two pytest sessions started together in one checkout (same results folder, same cache) do not trip
over each other: each has its own results/<session>/ folder, so no QEMU finds another's pidfile and no
transcript is overwritten; results/latest points at one of them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

SAMPLE = '''
import pytest

@pytest.mark.parametrize("n", range(3))
def test_boot(vm, n):
    guest = vm()
    assert guest.run(f"echo run-{n}") == (f"run-{n}", 0)
'''


def test_two_concurrent_sessions_keep_their_own_folders(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    results = tmp_path / "results"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={tmp_path}",
            str(tmp_path / "test_sample.py"), "--bootmatrix-cell=riscv64-opensbi-direct",
            f"--bootmatrix-results={results}", "--bootmatrix-no-history"]
    sessions = [subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for _ in range(2)]
    outputs = [session.communicate(timeout=600)[0] for session in sessions]
    for session, output in zip(sessions, outputs, strict=True):
        assert session.returncode == 0, output
        assert "3 passed" in output
    folders = sorted(p for p in results.iterdir() if p.name.startswith("pytest-"))
    assert len(folders) == 2, folders
    for folder in folders:
        transcripts = sorted(folder.glob("*/vm/console.log"))
        assert len(transcripts) == 3, transcripts
        answers = []
        for transcript in transcripts:
            # The guest's answer alone on its line (not the command's echo, nor the harness's send note):
            # each of the session's three tests answered on a console of its own.
            answers += re.findall(r"(?m)^\[[ \d.]+\] run-(\d)$", transcript.read_text())
            assert "Cannot lock pid file" not in (transcript.parent / "qemu-output.log").read_text()
        assert sorted(answers) == ["0", "1", "2"], (folder, answers)
    assert (results / "latest").resolve() in [f.resolve() for f in folders]
