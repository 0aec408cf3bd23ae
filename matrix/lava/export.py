"""`bootmatrix export lava`: each cell of a matrix as a LAVA job a lab can submit as it is.

A job is `device_type: qemu` with a `context` (arch, machine, cpu, memory, `no_kvm` from the
accelerator verdict, and `extra_options` for what the firmware profile adds: pflash machine options,
`-smp`, `-no-reboot`, devices), a `deploy: to: tmpfs` of every file the cell boots (kernel, initramfs,
stick, ISO, firmware banks), each by URL under --artifacts-url with its sha256 and the QEMU arguments
that attach it, a `boot: method: qemu` that is ready at the cell's shell prompt (or its readiness
marker, or a login it answers), and `test` actions that need no overlay: `interactive` commands with
success and failure patterns for a shell (the sum the suite asks every shell, `uname -m`, a DHCP
lease), `monitors` for an image without one.

Files are laid out under DIR/artifacts/<sha256>/<name>, named by content, ready for any web server;
DIR/jobs/<cell>.yaml and DIR/devices/<cell>.yaml (the device dictionary a lab renders for that job's
context, device.py); DIR/export.json lists them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from arches import ARCHES
from harness.spec import MachineSpec, disk_args, machine_args, pflash_blockdev
from images.store import file_sha256
from matrix.lab import Lab
from matrix.lava.device import device_dict
from matrix.model import Cell

# The shell prompt of every image of ours (images/guest/init.sh, images/guest/go/init/main.go).
SHELL_PROMPT = "bootmatrix# "
# What the test steps set the prompt to: it cannot appear in the echo of the command that sets it.
TEST_PROMPT = "bm-lava# "
SET_TEST_PROMPT = "export PS1='bm-lava''# '"
FAILURES = ["Kernel panic", "Oops", "segfault", "command not found"]
# The lease on every kind: the image's own DHCP command (busybox udhcpc prints "lease of", systemd-
# networkd-wait-online prints nothing), then the address read back. Through cat, so that the output is
# not a terminal and Debian 13's ip puts no colour escapes between "inet" and the address.
ADDRESS_READBACK = "ip -o -4 addr show dev {interface} | cat"
LEASE_PATTERN = r"inet [0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/"
# The qemu device type's NIC is `-net nic,model=virtio -net user`; QEMU (10.0.13 measured) creates no NIC
# from it on riscv64 virt ("requested NIC ... was not created (not supported by this machine?)"), so
# the guest has no eth0. Jobs of these arches bring their own, on a netdev of their own.
OWN_NIC = {"riscv64": ["-netdev user,id=bmnet0", "-device virtio-net-pci,netdev=bmnet0"]}


@dataclass(frozen=True)
class ExportedJob:
    cell: str
    arch: str
    job: str  # paths relative to the export folder
    device: str


def deployed_files(spec: MachineSpec) -> dict[str, tuple[Path, str]]:
    """label -> (local file, the QEMU arguments that attach it, `{label}` standing for its path)."""
    files: dict[str, tuple[Path, str]] = {}
    if spec.kernel:
        # LAVA joins the command line with spaces and pexpect splits it again: quoted as a shell would.
        append = f" -append {shlex.quote(spec.append)}" if spec.append else ""
        files["kernel"] = (spec.kernel, "-kernel {kernel}" + append)
    if spec.initrd:
        files["initrd"] = (spec.initrd, "-initrd {initrd}")
    if spec.dtb:
        files["dtb"] = (spec.dtb, "-dtb {dtb}")
    if spec.bios:
        files["bios"] = (spec.bios, "-bios {bios}")
    for unit, flash in enumerate(spec.pflash):
        files[f"pflash{unit}"] = (flash.path, " ".join(pflash_blockdev(unit, f"{{pflash{unit}}}", flash.readonly)))
    for index, disk in enumerate(spec.disks):
        files[f"disk{index}"] = (disk.path, " ".join(disk_args(index, disk, f"{{disk{index}}}")))
    return files


def context_of(spec: MachineSpec, accel: str) -> dict[str, Any]:
    """The job's context: what the lab's qemu template reads, and the rest as extra_options (on amd64
    the template ignores machine and cpu, so they go there too)."""
    machine = machine_args(spec)[1]
    arch = ARCHES[spec.arch].debian
    context: dict[str, Any] = {"arch": arch, "memory": spec.memory_mib, "no_kvm": accel != "kvm"}
    extra = [f"-smp {spec.smp}", "-no-reboot" if spec.on_reboot == "exit" else "-action reboot=reset"]
    if arch == "amd64":
        extra.insert(0, f"-machine {machine}")
        if spec.cpu:
            extra.insert(1, f"-cpu {spec.cpu}")
    else:
        context["machine"] = machine
        if spec.cpu:
            context["cpu"] = spec.cpu
    extra += OWN_NIC.get(spec.arch, [])
    extra += [f"-global {value}" for value in spec.globals]
    extra += [f"-device {value}" for value in spec.devices]
    extra += [shlex.quote(arg) for arg in spec.extra_args]
    context["extra_options"] = extra
    return context


def publish(path: Path, artifacts: Path) -> tuple[str, str]:
    """Copy a file under artifacts/<sha256>/<name> (once: content-named); its relative URL and sha256."""
    sha256 = file_sha256(path)
    target = artifacts / sha256 / path.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}")
        shutil.copyfile(path, temporary)
        os.replace(temporary, target)
    return f"{sha256}/{path.name}", sha256


def lease_command(dhcp_command: str, interface: str) -> str:
    """The dhcp-lease step's command: the image's DHCP command, then its address (LEASE_PATTERN)."""
    return f"{dhcp_command.format(interface=interface)} && {ADDRESS_READBACK.format(interface=interface)}"


def test_actions(lab: Lab, cell: Cell, budget: float) -> list[dict[str, Any]]:
    readiness = lab.readiness(cell)
    if not readiness.shell:
        assert readiness.marker is not None
        return [{"test": {"timeout": {"seconds": int(budget)}, "monitors": [
            {"name": "ready", "start": "", "end": readiness.marker, "pattern": readiness.marker}]}}]
    failures = [{"message": m} for m in [*FAILURES, *readiness.bad_patterns.values()]]
    dhcp = lease_command(readiness.dhcp_command, "eth0")

    def step(name: str, command: str, success: str) -> dict[str, Any]:
        return {"name": name, "command": command, "successes": [{"message": success}], "failures": failures}

    steps = [
        {"name": "prompt", "command": SET_TEST_PROMPT},
        step("shell-computes", "echo $((6*7))", "42"),
        step("uname", "uname -m", ARCHES[cell.arch].name),
        step("dhcp-lease", dhcp, LEASE_PATTERN),
    ]
    return [{"test": {"timeout": {"minutes": 3}, "interactive": [
        {"name": "bootmatrix-checks", "prompts": [TEST_PROMPT, SHELL_PROMPT], "script": steps}]}}]


def job_of(lab: Lab, cell: Cell, artifacts: Path, artifacts_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job definition of a cell and the device dictionary for its context."""
    accel, _why = lab.accel(cell)
    spec = lab.spec(cell, accel)
    readiness = lab.readiness(cell)
    budget = lab.boot_budget(cell, accel)
    images = {}
    for label, (path, image_arg) in deployed_files(spec).items():
        relative, sha256 = publish(path, artifacts)
        images[label] = {"url": f"{artifacts_url.rstrip('/')}/{relative}", "sha256sum": sha256, "image_arg": image_arg}
    boot: dict[str, Any] = {"method": "qemu", "media": "tmpfs", "timeout": {"seconds": int(budget)},
                            "parameters": {"kernel-start-message": ""}}
    if readiness.login is not None:
        boot["auto_login"] = {"login_prompt": "login:", "username": readiness.login.user}
        if readiness.login.password:
            boot["auto_login"] |= {"password_prompt": "Password:", "password": readiness.login.password}
        boot["prompts"] = [r"\$ ", "# "]
    elif readiness.shell:
        boot["prompts"] = [SHELL_PROMPT]
    context = context_of(spec, accel)
    job = {
        "device_type": "qemu",
        "job_name": f"bootmatrix {cell.id}",
        "metadata": {"bootmatrix.cell": cell.id, "bootmatrix.arch": cell.arch, "bootmatrix.firmware": cell.firmware},
        "priority": "medium",
        "visibility": "public",
        "timeouts": {"job": {"seconds": int(budget) + 600}, "action": {"seconds": int(budget) + 60},
                     "connection": {"minutes": 2}},
        "context": context,
        "actions": [
            {"deploy": {"to": "tmpfs", "timeout": {"minutes": 5}, "images": images}},
            {"boot": boot},
            *test_actions(lab, cell, budget),
        ],
    }
    return job, device_dict(context)


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=1000))


def export(lab: Lab, cells: list[Cell], out: Path, artifacts_url: str) -> list[ExportedJob]:
    """Write every cell's job, device dictionary and artifacts under `out`; export.json lists them."""
    jobs = []
    for cell in cells:
        job, device = job_of(lab, cell, out / "artifacts", artifacts_url)
        exported = ExportedJob(cell.id, cell.arch, f"jobs/{cell.id}.yaml", f"devices/{cell.id}.yaml")
        write_yaml(out / exported.job, job)
        write_yaml(out / exported.device, device)
        jobs.append(exported)
    (out / "export.json").write_text(json.dumps(
        {"artifacts_url": artifacts_url, "jobs": [asdict(j) for j in jobs]}, indent=1))
    return jobs
