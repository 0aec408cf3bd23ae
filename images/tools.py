"""Running the host tools recipes build with (mkfs.vfat, mmd, mcopy, syslinux, go, ...): a tool that
fails raises one BuildError carrying its command and its own words, so a report can say exactly which
tool failed and why, per cell, instead of a bare CalledProcessError escaping the run."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

TAIL = 2000  # characters of a tool's stderr kept in the error


class BuildError(Exception):
    """A recipe could not build its artifact: `tool` (the program) failed with `stderr`."""

    def __init__(self, message: str, tool: str = "", stderr: str = ""):
        self.tool, self.stderr = tool, stderr
        super().__init__(message)


class ToolMissing(Exception):
    """A host tool a recipe needs is not installed: the cell cannot run here (a tool that runs and fails
    is a BuildError instead)."""


def host_tool(name: str, packages: str, purpose: str) -> str:
    """The path of host tool `name`, also looked for in the sbin folders a user's PATH may lack
    (mkfs.vfat, mkfs.btrfs); ToolMissing naming the Debian packages that bring it when it is not there."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise ToolMissing(f"{name} is needed to {purpose} (Debian {packages}; scripts/setup-host installs it)")
    return found


def run_tool(
    argv: Sequence[str], what: str, *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a build tool (with `stdin` as its input: sfdisk reads its script there); BuildError naming
    `what`, the tool, its exit status and its stderr if it fails."""
    tool = Path(argv[0]).name
    try:
        done = subprocess.run(list(argv), env=dict(env) if env is not None else None, cwd=cwd, capture_output=True,
                              text=True, errors="replace", check=False, input=stdin)
    except OSError as error:
        raise BuildError(f"{what}: {tool} cannot run: {error}", tool, str(error)) from error
    if done.returncode != 0:
        words = (done.stderr.strip() or done.stdout.strip())[-TAIL:]
        raise BuildError(f"{what}: {tool} failed (exit {done.returncode}): {words}", tool, words)
    return done
