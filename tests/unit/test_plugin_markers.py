"""What the plugin's markers enforce.

`-m "not vm"` starts no QEMU: the plugin refuses a real QEMU launch from a test without the `vm` marker
(the refusal comes before the process exists, so this unit test starts none either), and a test that
catches the refusal still fails. Tests that use the VM or lab fixtures are marked for them. A test that
needs a host tool says so (`bootmatrix_needs`) and fails without it, as strictly as a cell would."""

from __future__ import annotations

import shutil

import pytest

SNEAKY = '''
from harness.machine import Machine
from harness.qemu import QemuInstall
from harness.spec import MachineSpec


def spec(tmp_path):
    return MachineSpec("x86_64", "pc")


def test_starts_a_machine(tmp_path):
    Machine(spec(tmp_path), QemuInstall.host(), tmp_path).start()


def test_swallows_the_refusal(tmp_path):
    try:
        Machine(spec(tmp_path), QemuInstall.host(), tmp_path).start()
    except Exception:
        pass


def test_asks_qemu_about_a_capability():
    QemuInstall.host().refusal("x86_64", ("-machine", "pc"))


def test_uses_the_lab(bootmatrix_lab):
    pass
'''


@pytest.fixture
def sneaky(pytester: pytest.Pytester) -> pytest.Pytester:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("the host's qemu-system-x86_64 is not installed (scripts/setup-host installs it)")
    pytester.makepyfile(test_sneaky=SNEAKY)
    return pytester


def test_a_test_without_the_vm_marker_cannot_start_qemu(sneaky: pytest.Pytester) -> None:
    result = sneaky.runpytest_subprocess("-p", "no:cacheprovider", "--bootmatrix-no-history", "-m", "not vm",
                                         "-rf")
    result.assert_outcomes(failed=3, deselected=1)
    output = result.stdout.str()
    for name in ("test_starts_a_machine", "test_swallows_the_refusal", "test_asks_qemu_about_a_capability"):
        assert (f"test_sneaky.py::{name} starts QEMU (qemu-system-x86_64) without the `vm` marker: mark it "
                "pytest.mark.vm") in output, output
    assert "test_uses_the_lab" not in output  # it uses the lab fixture: marked vm, so deselected


def test_the_vm_fixtures_mark_their_tests(sneaky: pytest.Pytester) -> None:
    result = sneaky.runpytest_subprocess("-p", "no:cacheprovider", "--bootmatrix-no-history", "-m", "vm",
                                         "--collect-only", "-q")
    assert "test_sneaky.py::test_uses_the_lab" in result.stdout.str()
    assert "test_starts_a_machine" not in result.stdout.str()


NEEDS = '''
import pytest


@pytest.mark.bootmatrix_needs("no-such-tool-bm", "no-such-package", "show what a missing tool does")
def test_needs_a_tool():
    pass
'''


def test_a_missing_host_tool_is_an_error_naming_its_package_or_a_skip_when_not_strict(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(test_needs=NEEDS)
    monkeypatch.delenv("BOOTMATRIX_STRICT", raising=False)
    strict = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--bootmatrix-no-history", "-rE")
    strict.assert_outcomes(errors=1)
    strict.stdout.fnmatch_lines(["*no-such-tool-bm is needed to show what a missing tool does (Debian "
                                 "no-such-package; scripts/setup-host installs it) (BOOTMATRIX_STRICT=0 makes "
                                 "this a skip)*"])
    monkeypatch.setenv("BOOTMATRIX_STRICT", "0")
    lenient = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--bootmatrix-no-history")
    lenient.assert_outcomes(skipped=1)


@pytest.mark.parametrize("how", ["accel", "results"])
def test_a_session_that_cannot_run_is_a_one_line_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    pytester.makepyfile(test_inner="def test_inner():\n    pass\n")
    args = ["-p", "no:cacheprovider"]
    if how == "accel":
        monkeypatch.setenv("BOOTMATRIX_ACCEL", "nope")
        expected = "BOOTMATRIX_ACCEL='nope': give tcg or kvm"
    else:
        (pytester.path / "results").write_text("a file")
        args.append(f"--bootmatrix-results={pytester.path / 'results'}")
        expected = "it is a file, not a folder"
    outcome = pytester.runpytest_subprocess(*args)
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    assert expected in outcome.stderr.str() and "Traceback" not in outcome.stderr.str()


def test_a_project_names_its_matrix_in_its_pytest_configuration(pytester: pytest.Pytester) -> None:
    """`bootmatrix_matrix` (and `bootmatrix_arch`) in the project's ini: the cells come from there; the
    command line still wins."""
    pytester.makeini("[pytest]\nbootmatrix_matrix = mine.toml\nbootmatrix_arch = riscv64\n")
    (pytester.path / "mine.toml").write_text('[[cell]]\narch = "x86_64"\nfirmware = "seabios"\n'
                                             '[[cell]]\narch = "riscv64"\nfirmware = "opensbi"\n')
    pytester.makepyfile(test_inner="def test_inner(cell):\n    pass\n")
    listed = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q")
    assert "test_inner.py::test_inner[riscv64-opensbi-direct]" in listed.stdout.str()
    assert "x86_64" not in listed.stdout.str()
    shipped = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q",
                                            "--bootmatrix-matrix=gosource")
    assert "test_inner[riscv64-opensbi-direct-gosource]" in shipped.stdout.str()
