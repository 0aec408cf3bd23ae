"""apt with a private state directory: rootless, and never touching the host's apt or dpkg state.

Everything apt reads or writes (sources, lists, caches, the dpkg status) is redirected into one folder
of the bootmatrix cache. The dpkg status is empty, so dependency closures are resolved as for an empty
root: that is what we want for a QEMU extracted into its own prefix.

apt is used only to resolve (`bootmatrix lock`, or a locked file that is really gone): downloads of
locked packages go straight to their pool paths (images/debian/download.py). Each Debian arch has its
own state folder, so an index that is broken for one arch (a mirror mid-sync) stops only what needs it.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from arches import ARCHES, host_debian_arch
from images.debian.mirror import Mirror

DEBIAN_ARCHES = tuple(a.debian for a in ARCHES.values())


class AptError(Exception):
    pass


class IndexUnusable(AptError):
    """The mirror's index for one arch cannot be used now (size or hash disagrees with Release, a file
    missing): what needs that index fails with this, everything else goes on."""


INDEX_FILE = re.compile(r"(?:Failed to fetch|Err:\d+)\s+(\S+/dists/\S+?/(?:binary-(\S+?)/)?\S+)")


def index_error(stderr: str, arches: tuple[str, ...], suite: str) -> str:
    """One sentence naming the index file, its arch and the likely cause, from `apt-get update`'s words."""
    found = INDEX_FILE.search(stderr)
    file = found.group(1) if found else f"an index file of {suite}"
    arch = (found.group(2) if found else None) or "/".join(arches)
    lowered = stderr.lower()
    if "mirror sync in progress" in lowered or "unexpected size" in lowered or "hash sum mismatch" in lowered:
        cause = ("mirror sync in progress (the file disagrees with Release): try again later or set "
                 "BOOTMATRIX_DEBIAN_MIRROR")
    elif "signature" in lowered or "no_pubkey" in lowered or "not signed" in lowered:
        cause = "the Release signature does not verify against the keyring (BOOTMATRIX_DEBIAN_KEYRING)"
    elif "404" in lowered:
        cause = "the mirror does not have it (wrong suite, or a mirror that lacks this arch)"
    else:
        cause = "the mirror could not be read: check the network or set BOOTMATRIX_DEBIAN_MIRROR"
    return f"the {suite} index {file} for {arch} is unusable: {cause}"


@dataclass(frozen=True)
class PackageRef:
    name: str
    arch: str
    version: str

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.arch}={self.version}"

    @property
    def deb_name(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


class PrivateApt:
    def __init__(self, state_dir: Path, mirror: Mirror, suite: str, arches: tuple[str, ...] = DEBIAN_ARCHES):
        self.dir = state_dir
        self.mirror = mirror
        self.suite = suite
        self.arches = arches
        # apt resolves an `Architecture: all` package's dependencies in its native arch: a state folder
        # of one foreign arch is that arch's native apt, or a foreign root's closure cannot be resolved.
        self.native = arches[0] if len(arches) == 1 else host_debian_arch()
        for sub in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
                    "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/lib/dpkg"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        status = self.dir / "var/lib/dpkg/status"
        if not status.exists():
            status.write_text("")
        (self.dir / "etc/apt/sources.list").write_text(mirror.sources_line(suite, list(arches)))
        self._lock = FileLock(str(self.dir / "state.lock"), timeout=1800)

    def _options(self) -> list[str]:
        d = self.dir
        opts = {
            "Dir": str(d),
            "Dir::State::status": str(d / "var/lib/dpkg/status"),
            "Dir::Etc::SourceList": str(d / "etc/apt/sources.list"),
            "Dir::Etc::SourceParts": str(d / "etc/apt/sources.list.d"),
            "Dir::Etc::Parts": str(d / "etc/apt/apt.conf.d"),
            "Dir::Etc::Preferences": str(d / "etc/apt/preferences"),
            "Dir::Etc::PreferencesParts": str(d / "etc/apt/preferences.d"),
            "APT::Architecture": self.native,
            "Debug::NoLocking": "1",
            "APT::Get::AllowUnauthenticated": "false",
            "APT::Install-Recommends": "false",
        }
        if os.geteuid() == 0:
            # As root, apt drops privileges to _apt, which cannot write into our private folders.
            opts["APT::Sandbox::User"] = "root"
        args = []
        for key, value in opts.items():
            args += ["-o", f"{key}={value}"]
        args += ["-o", "APT::Architectures::=" + self.native]
        for arch in self.arches:
            if arch != self.native:
                args += ["-o", "APT::Architectures::=" + arch]
        return args

    def _run(self, tool: str, *args: str, cwd: Path | None = None, check_stderr: bool = False) -> str:
        argv = [tool, *self._options(), *args]
        result = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}, check=False
        )
        failed_fetch = check_stderr and re.search(r"^(W|E): Failed to fetch", result.stderr, re.MULTILINE)
        if result.returncode != 0 or failed_fetch:
            raise AptError(
                f"{tool} {' '.join(args)} failed ({result.returncode}) against {self.mirror.uri} "
                f"{self.suite} (mirror from {self.mirror.origin}):\n{result.stderr.strip()[-2000:]}"
            )
        return result.stdout

    def update(self) -> None:
        """Fetch the index; IndexUnusable (naming the file, arch and likely cause) when it cannot be used.
        apt-get update exits 0 on some fetch errors ('W: Failed to fetch'), so its words are read too."""
        with self._lock:
            try:
                self._run("apt-get", "update", check_stderr=True)
            except AptError as error:
                raise IndexUnusable(f"{index_error(str(error), self.arches, self.suite)}\n{error}") from error

    def closure(self, packages: list[str]) -> list[PackageRef]:
        """Every package apt would install into an empty root for `packages` (no recommends)."""
        out = self._run("apt-get", "install", "--simulate", *packages)
        refs = []
        for line in out.splitlines():
            match = re.match(r"^Inst (\S+) \((\S+) .*\[(\S+)\]\)", line)
            if match:
                name, version, arch = match.groups()
                refs.append(PackageRef(name.split(":")[0], arch, version))
        if not refs:
            raise AptError(f"apt resolved nothing for {packages}:\n{out[-2000:]}")
        return refs

    def depends(self, package: str) -> list[str]:
        out = self._run("apt-cache", "depends", "--no-recommends", "--no-suggests", package)
        return [m.group(1) for m in re.finditer(r"^\s+Depends: (\S+)", out, re.MULTILINE)]

    def show(self, refs: list[PackageRef]) -> dict[PackageRef, dict[str, str]]:
        """The index fields (SHA256, Size, ...) of each package, in one apt-cache call."""
        out = self._run("apt-cache", "show", *[r.spec for r in refs])
        found: dict[PackageRef, dict[str, str]] = {}
        for stanza in out.split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(" "):
                    key, value = line.split(":", 1)
                    fields[key] = value.strip()
            if "Package" in fields:
                ref = PackageRef(fields["Package"], fields["Architecture"], fields["Version"])
                found.setdefault(ref, fields)
        return found

    def required(self, arch: str) -> list[str]:
        """The packages of `arch` that Debian marks Essential or Priority: required: what debootstrap's
        minbase installs, and what a root must hold for dpkg and its maintainer scripts to work."""
        out = self._run("apt-cache", "dumpavail")
        names: set[str] = set()
        for stanza in out.split("\n\n"):
            fields = dict(re.findall(r"^(Package|Architecture|Priority|Essential): (\S+)$", stanza, re.MULTILINE))
            if fields.get("Architecture") not in (arch, "all"):
                continue
            if fields.get("Priority") == "required" or fields.get("Essential") == "yes":
                names.add(fields["Package"])
        if not names:
            raise AptError(f"the {self.suite} index of {arch} marks no package required or essential")
        return sorted(names)

    def candidate(self, package: str, arch: str) -> PackageRef:
        out = self._run("apt-cache", "policy", f"{package}:{arch}")
        match = re.search(r"Candidate: (\S+)", out)
        if not match or match.group(1) == "(none)":
            raise AptError(f"{package}:{arch} has no candidate in {self.suite}")
        return PackageRef(package, arch, match.group(1))

