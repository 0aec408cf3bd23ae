"""Which QEMU to run, and how: the host's from PATH, or one unpacked into a prefix with its own loader.

A prefix install is a Debian QEMU and its whole library closure extracted into a folder (see
images/recipes/qemu.py). It is started through the dynamic loader it brings, with `--library-path`
pointing at its own libraries, so a newer QEMU runs on an older host without touching the host's
libraries; `QEMU_MODULE_DIR` keeps it from loading the host's modules, and `-L` points it at its own
firmware and ROMs. `--argv0` keeps the process named qemu-system-* in `ps`.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from arches import NAMES

ARCHES = NAMES


class QemuNotFound(Exception):
    """No usable QEMU binary for an arch: the plugin turns this into a skip (or an error in strict mode)."""


LaunchWatcher = Callable[[Sequence[str]], None]
_launch_watchers: list[LaunchWatcher] = []


def watch_launches(watcher: LaunchWatcher) -> Callable[[], None]:
    """Call `watcher(argv)` before every QEMU process the harness starts (a VM, a paused capability
    probe, the KVM probe); it may raise to refuse the launch. Returns the function that stops watching.
    The pytest plugin uses it to fail a test that starts QEMU without the `vm` marker."""
    _launch_watchers.append(watcher)
    return lambda: _launch_watchers.remove(watcher)


def announce_launch(argv: Sequence[str]) -> None:
    """What every QEMU start calls first (see watch_launches)."""
    for watcher in list(_launch_watchers):
        watcher(argv)


@dataclass(frozen=True)
class QemuInstall:
    name: str  # "host", "pinned", ...
    prefix: Path | None = None  # None: binaries from PATH
    libc_arch: str = "x86_64-linux-gnu"
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def host(cls) -> QemuInstall:
        return cls("host")

    @classmethod
    def from_prefix(cls, name: str, prefix: Path) -> QemuInstall:
        return cls(name, prefix)

    def binary(self, arch: str) -> Path:
        if self.prefix is None:
            found = shutil.which(f"qemu-system-{arch}")
            if not found:
                raise QemuNotFound(f"qemu-system-{arch} is not on PATH (install QEMU or use the pinned one)")
            return Path(found)
        path = self.prefix / "usr/bin" / f"qemu-system-{arch}"
        if not path.exists():
            raise QemuNotFound(f"{path} does not exist in the {self.name} QEMU prefix")
        return path

    def _lib_dirs(self) -> list[Path]:
        assert self.prefix is not None
        candidates = [self.prefix / "usr/lib" / self.libc_arch, self.prefix / "lib" / self.libc_arch]
        return [d for d in candidates if d.is_dir()]

    def command(self, arch: str) -> list[str]:
        """The argv prefix that starts qemu-system-<arch>, before any QEMU option."""
        binary = self.binary(arch)
        if self.prefix is None:
            return [str(binary)]
        loaders = sorted(self.prefix.glob(f"usr/lib/{self.libc_arch}/ld-linux*.so.*"))
        if not loaders:
            raise QemuNotFound(f"no dynamic loader in {self.prefix}/usr/lib/{self.libc_arch}")
        library_path = ":".join(str(d) for d in self._lib_dirs())
        return [str(loaders[0]), "--library-path", library_path, "--argv0", binary.name, str(binary)]

    def data_args(self) -> list[str]:
        """`-L` options for the install's own firmware and ROM folders."""
        if self.prefix is None:
            return []
        dirs = [self.prefix / "usr/share/qemu", self.prefix / "usr/share/seabios"]
        args: list[str] = []
        for directory in dirs:
            if directory.is_dir():
                args += ["-L", str(directory)]
        return args

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.prefix is not None:
            env["QEMU_MODULE_DIR"] = str(self.prefix / "usr/lib" / self.libc_arch / "qemu")
        env.update(self.extra_env)
        return env

    def version(self, arch: str) -> str:
        return _version(tuple(self.command(arch)), tuple(sorted(self.env().items())))

    def refusal(self, arch: str, args: tuple[str, ...]) -> str | None:
        """Why this QEMU refuses `args` (machine options, devices...), or None if it accepts them.

        QEMU is started paused (-S) with the args and told over QMP on stdin to quit, so a capability is
        found by asking this very binary, not by comparing version numbers.
        """
        return _refusal(tuple(self.command(arch)), tuple(self.data_args()), args, tuple(sorted(self.env().items())))


PROBE_TIMEOUT = 30.0  # seconds for `--version` or a paused start; a hang, not a slow answer


@functools.cache
def _refusal(
    command: tuple[str, ...], data: tuple[str, ...], args: tuple[str, ...], env: tuple[tuple[str, str], ...]
) -> str | None:
    argv = [*command, *data, "-S", "-nodefaults", "-display", "none", "-qmp", "stdio", *args]
    announce_launch(argv)
    script = '{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n'
    try:
        done = subprocess.run(argv, input=script, capture_output=True, text=True, env=dict(env), timeout=PROBE_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        return f"QEMU did not answer a paused start within {PROBE_TIMEOUT:.0f} s"
    except OSError as error:
        return f"{command[-1]} cannot run: {error}"
    if done.returncode == 0:
        return None
    return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"


@functools.cache
def _version(command: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> str:
    try:
        out = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, env=dict(env), timeout=PROBE_TIMEOUT, check=False
        )
    except OSError as error:
        raise QemuNotFound(f"{command[-1]} cannot run: {error}") from error
    except subprocess.TimeoutExpired:
        raise QemuNotFound(f"{command[-1]} --version did not answer within {PROBE_TIMEOUT:.0f} s (a hung "
                           "binary)") from None
    match = re.search(r"version (\S+)", out.stdout)
    if out.returncode != 0 or not match:
        raise QemuNotFound(f"{command[-1]} --version failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return match.group(1)
