"""Which accelerator a guest gets: KVM only after a probe boot has succeeded under it.

`/dev/kvm` being there proves nothing (on some hosts every guest dies with "KVM internal error"), and
`-accel kvm:tcg` does not fall back once KVM has accepted the VM. Two probes, cheapest first:
1. a 512-byte boot sector through SeaBIOS that writes to an isa-debug-exit port: QEMU exits with
   (0x2a << 1) | 1 = 85 only if the guest ran. This catches hosts without working KVM at all.
2. when the caller gives one, a real kernel booted to its readiness marker. Measured on our CI hosts:
   the boot sector ran fine under KVM, but every Linux guest died with "KVM internal error" on a
   VEX-encoded (BMI2) instruction in the kernel's decompressor, so stage 1 alone would say yes wrongly.
The verdict is cached per host fingerprint (kernel, CPU model, QEMU), so this normally runs once per
host; it is probed again when it is older than VERDICT_TTL, when /dev/kvm changed (appeared, vanished,
another device number, owner or mode, or this user's access to it) or when the QEMU binary changed
(path, size, mtime) even at the same version. `bootmatrix cache prune` removes cached verdicts too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from filelock import FileLock

from arches import ARCHES, host_arch
from harness.deadline import Deadline
from harness.errors import MachineError
from harness.hostinfo import host_facts
from harness.machine import Machine
from harness.qemu import QemuInstall, QemuNotFound, announce_launch
from harness.spec import MachineSpec, option_value

log = logging.getLogger(__name__)
ACCEL_ENV = "BOOTMATRIX_ACCEL"  # force "tcg" or "kvm"
PROBE_EXIT_CODE = (0x2A << 1) | 1
PROBE_TIMEOUT = 15.0
VERDICT_TTL = 7 * 86400.0  # seconds a cached verdict is trusted (a kernel or firmware update may fix KVM)
KVM_DEVICE = Path("/dev/kvm")
HOST_GUEST_ARCH = host.name if (host := host_arch()) is not None else ""


class BadSetting(MachineError):
    """An environment setting of ours has a value we do not know: one line naming it."""


def forced_accel() -> str | None:
    """The accelerator BOOTMATRIX_ACCEL forces, if any; BadSetting for a value QEMU would be given blindly."""
    forced = os.environ.get(ACCEL_ENV, "")
    if forced and forced not in ("tcg", "kvm"):
        raise BadSetting(f"{ACCEL_ENV}={forced!r}: give tcg or kvm (or leave it unset: the probe decides)")
    return forced or None


@dataclass(frozen=True)
class AccelVerdict:
    kvm_usable: bool
    reason: str
    probe_seconds: float
    fingerprint: str
    probed_at: float = 0.0  # unix time of the probe
    context: dict[str, str] = field(default_factory=dict)  # what the verdict depends on (verdict_context)


def verdict_context(qemu: QemuInstall, device: Path | None = None) -> dict[str, str]:
    """What must be unchanged for a cached verdict to hold: /dev/kvm as this user sees it, and the QEMU
    binary itself."""
    device = device or KVM_DEVICE
    try:
        info = device.stat()
        kvm = (f"rdev={info.st_rdev} mode={info.st_mode:o} uid={info.st_uid} gid={info.st_gid} "
               f"access={os.access(device, os.R_OK | os.W_OK)}")
    except OSError as error:
        kvm = f"missing ({error.strerror})"
    try:
        binary = qemu.binary("x86_64")
        stat = binary.stat()
        build = f"{binary} size={stat.st_size} mtime={stat.st_mtime_ns}"
    except (OSError, QemuNotFound) as error:
        build = f"unavailable ({error})"
    return {"kvm_device": kvm, "qemu_binary": build}


def still_valid(verdict: AccelVerdict, context: dict[str, str], now: float) -> str | None:
    """None when the cached verdict holds; otherwise why it must be probed again."""
    if now - verdict.probed_at > VERDICT_TTL:
        return f"older than {VERDICT_TTL / 86400:.0f} days"
    for key, value in context.items():
        if verdict.context.get(key) != value:
            return f"{key} changed: {verdict.context.get(key)!r} -> {value!r}"
    return None


def clear_verdicts(cache_dir: Path, older_than_days: float | None = None) -> list[Path]:
    """Remove cached verdicts (all, or those probed more than `older_than_days` ago) and probe folders."""
    removed: list[Path] = []
    if not cache_dir.is_dir():
        return removed
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    for path in sorted(cache_dir.glob("kvm-*.json")):
        if cutoff is None or path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            shutil.rmtree(path.with_name(path.stem + "-probe"), ignore_errors=True)
            removed.append(path)
    return removed


def probe_boot_sector() -> bytes:
    """mov al,0x2a; out 0xf4,al; hlt; jmp $-1 — then padding and the 0x55AA boot signature."""
    code = bytes([0xB0, 0x2A, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD])
    return code + b"\0" * (510 - len(code)) + b"\x55\xaa"


def host_fingerprint(qemu: QemuInstall) -> str:
    parts = [*host_facts(), qemu.name, qemu.version("x86_64")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ProbeKernel:
    """A Linux guest for probe stage 2: boots to `ready` (a regex) on the serial console."""

    kernel: Path
    initrd: Path | None
    append: str
    ready: str
    identity: str  # what this kernel is (a hash), part of the cache key


def run_kvm_probe(qemu: QemuInstall, workdir: Path, kernel: ProbeKernel | None = None) -> AccelVerdict:
    verdict = _boot_sector_probe(qemu)
    if not verdict.kvm_usable or kernel is None:
        return verdict
    return _kernel_probe(qemu, workdir, kernel, verdict.fingerprint)


def _kernel_probe(qemu: QemuInstall, workdir: Path, probe: ProbeKernel, fingerprint: str) -> AccelVerdict:
    spec = MachineSpec(
        "x86_64", ARCHES["x86_64"].machine, accel="kvm", memory_mib=256, kernel=probe.kernel, initrd=probe.initrd,
        append=probe.append,
    )
    started = time.monotonic()
    try:
        with Machine(spec, qemu, workdir, name="kvm-probe") as machine:
            machine.console.expect(probe.ready, Deadline.after(PROBE_TIMEOUT * 2), what="probe kernel ready")
    except MachineError as error:
        first = str(error).splitlines()[0]
        said = (workdir / "qemu-output.log").read_text(errors="replace").strip()[:200]
        return AccelVerdict(False, f"Linux probe failed under KVM: {first} {said}", time.monotonic() - started,
                            fingerprint)
    elapsed = time.monotonic() - started
    return AccelVerdict(True, f"boot sector and Linux probe ran under KVM ({elapsed:.1f} s)", elapsed, fingerprint)


def _boot_sector_probe(qemu: QemuInstall) -> AccelVerdict:
    fingerprint = host_fingerprint(qemu)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelVerdict(False, "/dev/kvm is missing or not accessible", 0.0, fingerprint)
    with tempfile.TemporaryDirectory(prefix="bm-kvm-probe-") as tmp:
        disk = Path(tmp) / "probe.img"
        disk.write_bytes(probe_boot_sector())
        argv = [
            *qemu.command("x86_64"), *qemu.data_args(),
            "-machine", "pc", "-accel", "kvm", "-m", "32", "-nodefaults", "-display", "none", "-no-reboot",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x01",
            "-drive", f"file={option_value(disk)},format=raw,if=ide",
        ]
        announce_launch(argv)
        started = time.monotonic()
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT, env=qemu.env(), check=False
            )
        except subprocess.TimeoutExpired as expired:
            raw = expired.stderr or b""
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            reason = f"probe guest did not finish in {PROBE_TIMEOUT:.0f} s under KVM: {text.strip()[-300:]}"
            return AccelVerdict(False, reason, time.monotonic() - started, fingerprint)
        elapsed = time.monotonic() - started
    if done.returncode == PROBE_EXIT_CODE:
        return AccelVerdict(True, f"probe guest ran under KVM in {elapsed:.2f} s", elapsed, fingerprint)
    output = (done.stderr + done.stdout).strip()[-300:]
    return AccelVerdict(False, f"probe guest failed under KVM (exit {done.returncode}): {output}", elapsed, fingerprint)


def kvm_verdict(qemu: QemuInstall, cache_dir: Path, kernel: ProbeKernel | None = None) -> AccelVerdict:
    """The cached verdict for this host, probing once (under a lock shared by all workers)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = host_fingerprint(qemu)
    key = hashlib.sha256(f"{fingerprint}|{kernel.identity if kernel else ''}".encode()).hexdigest()[:16]
    path = cache_dir / f"kvm-{key}.json"
    context = verdict_context(qemu)
    with FileLock(str(path) + ".lock", timeout=300):
        if path.exists():
            try:
                cached = AccelVerdict(**json.loads(path.read_text()))
            except (TypeError, json.JSONDecodeError):
                cached = None  # a verdict written by an older version: probe again
            why = still_valid(cached, context, time.time()) if cached is not None else "unreadable"
            if cached is not None and why is None:
                return cached
            log.warning("KVM verdict %s is stale (%s): probing again", path.name, why)
        verdict = run_kvm_probe(qemu, cache_dir / f"kvm-{key}-probe", kernel)
        verdict = replace(verdict, probed_at=time.time(), context=context)
        path.write_text(json.dumps(asdict(verdict), indent=2) + "\n")
        return verdict


def choose_accel(
    guest_arch: str, qemu: QemuInstall, cache_dir: Path, wanted: str = "auto", kernel: ProbeKernel | None = None
) -> tuple[str, str]:
    """(accelerator, why) for a guest of `guest_arch` on this host."""
    forced = forced_accel()
    if forced:
        return forced, f"forced by {ACCEL_ENV}"
    if wanted in ("tcg", "kvm"):
        return wanted, "asked for by the cell"
    if guest_arch != HOST_GUEST_ARCH:
        return "tcg", f"{guest_arch} guest on a {platform.machine()} host"
    if guest_arch != "x86_64":
        return "tcg", f"no KVM probe for {guest_arch} hosts yet"
    verdict = kvm_verdict(qemu, cache_dir, kernel)
    return ("kvm" if verdict.kvm_usable else "tcg"), verdict.reason
