"""The LAVA export's pure parts: the device dictionary a context renders to, a spec's deploy images and
context, reading a job's log back (the log lines are in the dispatcher's own record format), and how the QEMU
wrapper of a local run ends when the dispatcher closes its console."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import yaml

from harness.spec import Disk, MachineSpec, Pflash
from matrix.cli import main
from matrix.lava.device import device_dict, qemu_options
from matrix.lava.export import context_of, deployed_files
from matrix.lava.results import NotLavaOutput, job_config, read_job, read_output


def test_the_device_renders_a_context_as_the_qemu_device_type_does() -> None:
    assert qemu_options({"arch": "arm64", "machine": "virt,gic-version=3", "cpu": "max", "memory": 1024})[:2] == [
        "-cpu max", "-machine virt,gic-version=3"]
    assert qemu_options({"arch": "riscv64"})[:2] == ["-machine virt", "-cpu rv64"]
    amd64 = qemu_options({"arch": "amd64", "machine": "q35", "cpu": "qemu64", "no_kvm": True})
    assert not any("q35" in o or "qemu64" in o for o in amd64)  # ignored on amd64, as the template does
    assert qemu_options({"arch": "amd64"})[:2] == ["-cpu host", "-enable-kvm"]
    device = device_dict({"arch": "amd64", "no_kvm": True, "extra_options": ["-smp 2"]}, "/opt/qemu")
    parameters = device["actions"]["boot"]["methods"]["qemu"]["parameters"]
    assert parameters["command"] == "/opt/qemu" and parameters["extra"] == ["-smp 2"]
    assert "amd64" in device["available_architectures"]
    with pytest.raises(ValueError, match=r"context\.arch 'mips'"):
        device_dict({"arch": "mips"})


def _spec(arch: str, tmp_path: Path) -> MachineSpec:
    return MachineSpec(arch=arch, machine="q35" if arch == "x86_64" else "virt", kernel=tmp_path / "linux",
                       initrd=tmp_path / "initrd", append="console=ttyS0 panic=-1",
                       pflash=(Pflash(tmp_path / "CODE.fd", True), Pflash(tmp_path / "VARS.fd", False)),
                       disks=(Disk(tmp_path / "stick.img"), Disk(tmp_path / "cd.iso", interface="scsi-cd")),
                       machine_options=("acpi=off",), devices=("pvpanic",))


def test_every_file_of_a_spec_is_deployed_with_the_arguments_that_attach_it(tmp_path: Path) -> None:
    files = deployed_files(_spec("x86_64", tmp_path))
    assert {label: arg for label, (_, arg) in files.items()} == {
        "kernel": "-kernel {kernel} -append 'console=ttyS0 panic=-1'",
        "initrd": "-initrd {initrd}",
        "pflash0": "-blockdev node-name=pflash0,driver=file,filename={pflash0},read-only=on",
        "pflash1": "-blockdev node-name=pflash1,driver=file,filename={pflash1},read-only=off",
        "disk0": "-drive file={disk0},format=raw,if=none,id=disk0,snapshot=on -device virtio-blk-pci,drive=disk0",
        "disk1": "-drive file={disk1},format=raw,if=none,id=disk1,media=cdrom,readonly=on -device "
                 "virtio-scsi-pci,id=scsi1 -device scsi-cd,drive=disk1,bus=scsi1.0,bootindex=1",
    }


def test_machine_and_cpu_go_in_extra_options_on_amd64_only(tmp_path: Path) -> None:
    amd64 = context_of(_spec("x86_64", tmp_path), "tcg")
    assert amd64["arch"] == "amd64" and amd64["no_kvm"] is True and "machine" not in amd64
    assert amd64["extra_options"][:3] == ["-machine q35,acpi=off,pflash0=pflash0,pflash1=pflash1", "-smp 1",
                                          "-no-reboot"]
    arm64 = context_of(_spec("aarch64", tmp_path), "kvm")
    assert arm64["machine"] == "virt,acpi=off,pflash0=pflash0,pflash1=pflash1" and arm64["no_kvm"] is False
    assert not any(o.startswith("-machine") for o in arm64["extra_options"])


def _record(level: str, message: object, at: str = "2026-12-02T13:30:35.000000") -> str:
    return json.dumps({"dt": at, "lvl": level, "msg": message})


def _job_folder(tmp_path: Path, cell: str, lines: list[str]) -> Path:
    folder = tmp_path / "output" / cell
    folder.mkdir(parents=True)
    (folder / "job.yaml").write_text(yaml.safe_dump({"metadata": {"bootmatrix.cell": cell},
                                                     "context": {"arch": "amd64", "no_kvm": True}}))
    (folder / "lava.log").write_text("\n".join(lines) + "\n")
    return folder


PASSING = [
    _record("info", "start: 1 tmpfs-deploy", "2026-12-02T13:30:35.000000"),
    _record("target", "BOOTMATRIX-READY arch=x86_64"),
    _record("results", {"case": "login-action", "definition": "lava", "duration": "20.95", "result": "pass"}),
    _record("results", {"case": "uname", "definition": "0_bootmatrix-checks", "duration": "0.17", "result": "pass"}),
    _record("results", {"case": "job", "definition": "lava", "result": "pass"}, "2026-12-02T13:31:01.500000"),
]


def test_a_passing_job_is_read_with_its_console_and_durations(tmp_path: Path) -> None:
    result = read_job(_job_folder(tmp_path, "x86_64-ovmf-stick", PASSING))
    assert (result.cell, result.passed, result.reason) == ("x86_64-ovmf-stick", True, "")
    assert result.console == "BOOTMATRIX-READY arch=x86_64"
    assert result.boot_seconds == 20.95 and result.job_seconds == 26.5


def test_the_first_failed_result_is_the_reason_and_an_unfinished_log_fails(tmp_path: Path) -> None:
    failing = [*PASSING[:2],
               _record("results", {"case": "lava-test-monitor", "definition": "lava", "result": "fail",
                                   "extra": {"fail": "lava-test-monitor timed out after 30 seconds"}}),
               _record("results", {"case": "job", "definition": "lava", "result": "fail",
                                   "error_msg": "lava-test-monitor timed out after 30 seconds"}),
               "not a record {"]
    result = read_job(_job_folder(tmp_path, "bad", failing))
    assert not result.passed
    assert result.reason == "LAVA: lava/lava-test-monitor fail: lava-test-monitor timed out after 30 seconds"
    unfinished = read_job(_job_folder(tmp_path, "cut", PASSING[:3]))
    assert not unfinished.passed and "did not finish" in unfinished.reason


def test_a_jobs_history_configuration_does_not_depend_on_where_its_artifacts_are_served() -> None:
    def job(url: str, sha256: str) -> dict[str, object]:
        return {"context": {"arch": "amd64"}, "actions": [
            {"deploy": {"to": "tmpfs", "images": {"kernel": {"url": url, "sha256sum": sha256}}}}, {"boot": {}}]}

    assert job_config(job("http://127.0.0.1:1/a", "1")) == job_config(job("http://127.0.0.1:2/a", "1"))
    assert job_config(job("http://127.0.0.1:1/a", "1")) != job_config(job("http://127.0.0.1:1/a", "2"))


def test_a_folder_that_is_not_lava_output_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(NotLavaOutput, match="no such folder"):
        read_output(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotLavaOutput, match="no job folders"):
        read_output(tmp_path / "empty")
    folder = _job_folder(tmp_path, "x", PASSING)
    (folder / "job.yaml").write_text("device_type: qemu\n")
    with pytest.raises(NotLavaOutput, match="not a bootmatrix job"):
        read_output(tmp_path / "output")


def test_import_writes_the_run_reports_and_fails_on_a_failed_job(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _job_folder(tmp_path, "good", PASSING)
    assert main(["import", "lava", str(tmp_path / "output"), "--results", str(tmp_path / "results"),
                 "--history", str(tmp_path / "history.sqlite")]) == 0
    (report,) = (tmp_path / "results").glob("lava-*")
    summary = json.loads((report / "summary.json").read_text())
    assert summary["source"] == "lava" and [c["result"] for c in summary["cells"]] == ["pass"]
    assert (report / "good" / "console.log").read_text() == "BOOTMATRIX-READY arch=x86_64\n"
    _job_folder(tmp_path, "bad", [*PASSING[:2], _record("results", {"case": "job", "definition": "lava",
                                                                    "result": "fail", "error_msg": "boom"})])
    assert main(["import", "lava", str(tmp_path / "output"), "--results", str(tmp_path / "results"),
                 "--no-history"]) == 1
    (second,) = set((tmp_path / "results").glob("lava-*")) - {report}
    assert "<failure" in (second / "junit.xml").read_text()
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        assert db.execute("SELECT DISTINCT source, cell FROM metrics").fetchall() == [("lava", "good")]
    assert main(["import", "lava", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().out


STAND_IN_QEMU = """#!{python}
import pathlib, signal, sys, time
# A stand-in for QEMU's end: a hang-up starts a clean shutdown that takes a second, as a QEMU with
# gigabytes mapped can take on a loaded host; the signals pexpect sends meanwhile do not hurry it.
folder = pathlib.Path(sys.argv[0]).parent
asked = []
for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: asked.append(1))
print("stand-in ready", flush=True)
while not asked:
    time.sleep(0.02)
for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN)
time.sleep(1)
(folder / "ended").write_text("clean")
"""


def test_lava_closing_the_console_never_needs_a_sigkill_and_qemu_still_ends(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """lava-dispatcher ends a QEMU session with pexpect's close(force=True), which fails the job when
    the process it watches is not reaped 0.1 s after a SIGKILL. Through the wrapper, the process it
    watches is a small shell, which ends at the hang-up or, when started with SIGHUP and SIGINT ignored
    (nohup, a background job), at the SIGKILL; QEMU, hung up by the kernel in turn, is never sent a
    SIGKILL and shuts down cleanly on its own. (Had the wrapper exec'd QEMU, the stand-in would have
    been killed before it ended cleanly.)"""
    import signal
    import sys
    import time

    import pexpect

    from harness.qemu import QemuInstall
    from matrix.lava.local import qemu_wrapper

    stand_in = tmp_path / "path" / "qemu-system-x86_64"
    stand_in.parent.mkdir()
    stand_in.write_text(STAND_IN_QEMU.format(python=sys.executable))
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stand_in.parent}:{os.environ['PATH']}")
    wrapper = qemu_wrapper(QemuInstall.host(), "x86_64", tmp_path / "bin")
    console = pexpect.spawn(str(wrapper), ["-nographic"], timeout=30)
    console.expect("stand-in ready")
    console.close(force=True)  # raises "Could not terminate the child" when a SIGKILL was not enough
    assert console.signalstatus in (signal.SIGHUP, signal.SIGINT, signal.SIGKILL)  # the shell's end
    deadline = time.monotonic() + 20  # a hang's bound, not a speed target
    while not (stand_in.parent / "ended").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (stand_in.parent / "ended").read_text() == "clean"


@pytest.mark.parametrize("dhcp_command, output", [
    ("udhcpc -i {interface} -n -q -t 5 -T 2",  # busybox: our images
     "udhcpc: lease of 10.0.2.15 obtained from 10.0.2.2, lease time 86400\n"
     "2: eth0    inet 10.0.2.15/24 scope global eth0\\       valid_lft forever preferred_lft forever\n"),
    ("/usr/lib/systemd/systemd-networkd-wait-online --interface={interface} --ipv4 --timeout=60",  # Debian
     "2: eth0    inet 10.0.2.15/24 metric 1024 brd 10.0.2.255 scope global dynamic eth0\\       valid_lft 86395sec\n"),
])
def test_the_lease_step_succeeds_on_the_address_whatever_the_dhcp_client_prints(dhcp_command: str,
                                                                                 output: str) -> None:
    """LAVA fails a step whose prompt comes before a success: networkd's wait-online prints nothing, so
    the step's success is the address read back, which the echo of the command must not match."""
    import re

    from matrix.lava.export import LEASE_PATTERN, lease_command

    command = lease_command(dhcp_command, "eth0")
    assert command.startswith(dhcp_command.format(interface="eth0") + " && ip -o -4 addr show dev eth0")
    assert re.search(LEASE_PATTERN, output)
    assert not re.search(LEASE_PATTERN, command + "\n")
