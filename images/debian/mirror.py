"""Find the Debian mirror to use, from the host's own apt configuration.

No mirror host name is written anywhere in this project: the URI comes from the host's apt sources
(the first Debian `main` entry that is not a security or updates archive), or from
BOOTMATRIX_DEBIAN_MIRROR. Both one-line (`sources.list`) and deb822 (`*.sources`) files are read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MIRROR_ENV = "BOOTMATRIX_DEBIAN_MIRROR"
KEYRING_ENV = "BOOTMATRIX_DEBIAN_KEYRING"
DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class MirrorNotFound(Exception):
    pass


@dataclass(frozen=True)
class Mirror:
    uri: str
    keyring: Path
    origin: str  # where the URI came from, for messages

    def sources_line(self, suite: str, architectures: list[str]) -> str:
        options = f"arch={','.join(architectures)} signed-by={self.keyring}"
        return f"deb [{options}] {self.uri} {suite} main\n"


@dataclass(frozen=True)
class _Source:
    types: list[str]
    uris: list[str]
    suites: list[str]
    components: list[str]
    signed_by: str | None
    origin: str


def _parse_one_line(path: Path) -> list[_Source]:
    sources = []
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options: dict[str, str] = {}
        match = re.match(r"^(deb|deb-src)\s+\[([^\]]*)\]\s+(.*)$", line)
        if match:
            kind, opts, rest = match.groups()
            for item in opts.split():
                if "=" in item:
                    key, value = item.split("=", 1)
                    options[key] = value
        else:
            kind, _, rest = line.partition(" ")
        fields = rest.split()
        if len(fields) < 2:
            continue
        sources.append(
            _Source([kind], [fields[0]], [fields[1]], fields[2:], options.get("signed-by"), str(path))
        )
    return sources


def _parse_deb822(path: Path) -> list[_Source]:
    sources = []
    for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            key, value = raw.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or "uris" not in fields:
            continue
        sources.append(
            _Source(
                fields.get("types", "deb").split(),
                fields["uris"].split(),
                fields.get("suites", "").split(),
                fields.get("components", "").split(),
                fields.get("signed-by"),
                str(path),
            )
        )
    return sources


def host_sources(etc_apt: Path = Path("/etc/apt")) -> list[_Source]:
    sources: list[_Source] = []
    main_list = etc_apt / "sources.list"
    if main_list.exists():
        sources += _parse_one_line(main_list)
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                sources += _parse_one_line(path)
            elif path.suffix == ".sources":
                sources += _parse_deb822(path)
    return sources


def _is_debian_main_archive(source: _Source) -> bool:
    if "deb" not in source.types or "main" not in source.components:
        return False
    if all(s.endswith(("-security", "-updates", "-backports")) or "/" in s for s in source.suites):
        return False
    keyring = source.signed_by or ""
    uri_path = source.uris[0].rstrip("/") if source.uris else ""
    return "debian-archive" in keyring or uri_path.endswith("/debian")


def find_mirror(etc_apt: Path = Path("/etc/apt")) -> Mirror:
    """The mirror to fetch Debian packages from: BOOTMATRIX_DEBIAN_MIRROR, else the host's apt sources."""
    keyring = Path(os.environ.get(KEYRING_ENV, str(DEFAULT_KEYRING)))
    override = os.environ.get(MIRROR_ENV)
    if override:
        return Mirror(override.rstrip("/"), keyring, MIRROR_ENV)
    for source in host_sources(etc_apt):
        if _is_debian_main_archive(source):
            signed_by = source.signed_by
            chosen = Path(signed_by) if signed_by and signed_by.startswith("/") else keyring
            return Mirror(source.uris[0].rstrip("/"), chosen, source.origin)
    raise MirrorNotFound(
        f"no Debian mirror found: {etc_apt}/sources.list and sources.list.d/ have no Debian 'main' archive. "
        f"Set {MIRROR_ENV} to a Debian mirror URI (the folder that holds dists/ and pool/)."
    )
