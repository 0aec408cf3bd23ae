"""Mirror discovery from the host's apt configuration (host names here are reserved test names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from images.debian.mirror import MIRROR_ENV, MirrorNotFound, find_mirror


@pytest.fixture(autouse=True)
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)


def etc(tmp_path: Path, one_line: str = "", parts: dict[str, str] | None = None) -> Path:
    (tmp_path / "sources.list.d").mkdir(parents=True)
    (tmp_path / "sources.list").write_text(one_line)
    for name, text in (parts or {}).items():
        (tmp_path / "sources.list.d" / name).write_text(text)
    return tmp_path


def test_deb822_main_archive_is_found_and_security_skipped(tmp_path: Path) -> None:
    sources = """Types: deb
URIs: http://security.example.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# a comment line inside the stanza
URIs: http://mirror.example.invalid/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
    mirror = find_mirror(etc(tmp_path, parts={"debian.sources": sources}))
    assert mirror.uri == "http://mirror.example.invalid/debian"
    assert mirror.keyring == Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    assert mirror.origin.endswith("debian.sources")


def test_one_line_format_with_options(tmp_path: Path) -> None:
    line = "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example.invalid/debian/ bookworm main\n"
    mirror = find_mirror(etc(tmp_path, line))
    assert (mirror.uri, mirror.keyring) == ("http://mirror.example.invalid/debian", Path("/k.gpg"))
    assert mirror.sources_line("trixie", ["amd64", "arm64"]) == (
        "deb [arch=amd64,arm64 signed-by=/k.gpg] http://mirror.example.invalid/debian trixie main\n"
    )


def test_third_party_and_disabled_sources_are_ignored(tmp_path: Path) -> None:
    parts = {
        "vendor.list": "deb https://vendor.example.invalid/apt stable main\n",
        "off.sources": "Types: deb\nURIs: http://off.example.invalid/debian\nSuites: trixie\nComponents: main\n"
        "Enabled: no\n",
    }
    with pytest.raises(MirrorNotFound, match=MIRROR_ENV):
        find_mirror(etc(tmp_path, "# nothing\n", parts))


def test_environment_override_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MIRROR_ENV, "http://override.example.invalid/debian/")
    mirror = find_mirror(etc(tmp_path, "deb http://mirror.example.invalid/debian bookworm main\n"))
    assert (mirror.uri, mirror.origin) == ("http://override.example.invalid/debian", MIRROR_ENV)
