"""Build steps that need a running VM of the target arch (images.recipes.debian.GuestJob): booted
through the harness like any direct cell (the pinned QEMU, the KVM probe, the arch's firmware for a
direct boot), with the job's disks written in place.

The console transcript, QEMU's argv and QMP events stay in the store's `build-vms/<job>/` folder after
the build, so a failed maintainer script can be read where it failed.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from typing import TYPE_CHECKING

from harness.deadline import Deadline
from harness.errors import GuestError, MachineError
from harness.machine import Machine
from harness.spec import Disk
from harness.timeouts import scaled
from images.recipes.debian import GuestJob
from images.recipes.minimal import MinimalImage
from images.tools import BuildError
from matrix.profiles import BootMedia, direct_cell, needs_firmware_set

if TYPE_CHECKING:
    from matrix.lab import Lab

BUILD_SMP = 2  # TCG runs each vCPU on a host thread: dpkg's triggers and mke2fs use the second core


def run_guest_job(lab: Lab, job: GuestJob) -> str:
    """Boot `job` to its end line and power-off; its console transcript. BuildError with the reason,
    the console's last lines and where the whole log is, when it fails, hangs or never ends."""
    cell = direct_cell(job.arch, memory_mib=job.memory_mib, smp=BUILD_SMP)
    firmware = lab.firmware(cell.firmware_set) if needs_firmware_set(cell) else None
    media = BootMedia(MinimalImage(job.arch, job.kernel, job.initrd, ""), firmware)
    accel, _ = lab.accel(cell)
    spec = lab.spec(cell, accel, media=media)
    spec = replace(spec, append=job.append, disks=tuple(Disk(d, snapshot=False) for d in job.disks))
    workdir = lab.store.root / "build-vms" / job.name
    shutil.rmtree(workdir, ignore_errors=True)
    machine = Machine(spec, lab.qemu(cell.qemu), workdir, name=job.name, bad_patterns=dict(job.bad_patterns))
    budget = scaled(job.timeout, job.arch, accel)
    try:
        with machine:
            machine.console.expect(job.end, Deadline.after(budget), what=f"the end of {job.name}")
            machine.wait_exit(scaled(60.0, job.arch, accel))
    except (GuestError, MachineError) as error:
        raise BuildError(f"{job.name}: {str(error).splitlines()[0]} (console: {workdir / 'console.log'})\n"
                         f"{machine.tail()}") from error
    return (workdir / "console.log").read_text(errors="replace")
