"""The image manifest's pure parts: labels, listings, reading and writing, comparing, and the reasons
given for a file that differs (from two copies, or from one)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from images.manifest import (
    DIFFERS,
    IDENTICAL,
    MISSING,
    NEW,
    STALE,
    Hints,
    ImageRecord,
    ManifestError,
    RecordingStore,
    Used,
    compare,
    input_changes,
    labelled,
    listing,
    load_manifest,
    why_differs,
    write_manifest,
)
from images.store import tree_paths

HASH = "a" * 64


def _used(tmp_path: Path, name: str, inputs: dict[str, object]) -> Used:
    return Used(name, inputs, tmp_path)


def test_labels_are_names_and_shared_names_are_told_apart_by_plain_words_only(tmp_path: Path) -> None:
    entries = [
        _used(tmp_path, "stick", {"recipe": HASH}),
        _used(tmp_path, "efi-disk", {"name": "BOOTX64.EFI", "sha256": HASH, "mib": 8}),
        _used(tmp_path, "efi-disk", {"name": "BOOTAA64.EFI", "sha256": "b" * 64, "mib": 8}),
        _used(tmp_path, "blob", {"sha256": HASH}),
        _used(tmp_path, "blob", {"sha256": "c" * 64}),
    ]
    labels = labelled(entries)
    assert set(labels) == {"stick", "efi-disk[name=BOOTX64.EFI]", "efi-disk[name=BOOTAA64.EFI]",
                           f"blob[{entries[3].key[:12]}]", f"blob[{entries[4].key[:12]}]"}


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "data").write_bytes(b"payload")
    (root / "run").write_text("#!/bin/sh\n")
    (root / "run").chmod(0o755)
    (root / "empty").mkdir()
    (root / "link").symlink_to("sub/data")
    return root


def test_a_listing_has_one_line_per_file_link_and_empty_folder(tmp_path: Path) -> None:
    lines = listing(tree_paths(_tree(tmp_path / "content")))
    assert set(lines) == {"sub/data", "run", "empty", "link"}
    assert lines["sub/data"].endswith(" 7 -") and lines["run"].endswith(" x")
    assert lines["empty"] == "folder" and lines["link"] == "link sub/data"


def _record(content: Path, label: str = "img", inputs: dict[str, object] | None = None) -> ImageRecord:
    return ImageRecord.of(label, Used("img", inputs or {"recipe_version": 1}, content))


def test_the_manifest_round_trips_and_drops_images_no_longer_built(tmp_path: Path) -> None:
    folder = tmp_path / "manifest"
    one, two = _record(_tree(tmp_path / "a"), "one"), _record(_tree(tmp_path / "b"), "two[name=X]")
    assert write_manifest([one, two], folder) == ["one", "two[name=X]"]
    assert write_manifest([one, two], folder) == []  # nothing changed, nothing written
    assert load_manifest(folder) == {"one": one, "two[name=X]": two}
    assert write_manifest([one], folder, prune=False) == []  # a subset keeps the others' files
    assert write_manifest([one], folder) == ["two_name_X"]
    assert list(load_manifest(folder)) == ["one"]


def test_a_damaged_manifest_file_is_one_error_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "manifest"
    write_manifest([_record(_tree(tmp_path / "a"), "one")], folder)
    (folder / "one.json").write_text("{not json")
    with pytest.raises(ManifestError, match=r"one\.json: not an image manifest"):
        load_manifest(folder)
    (folder / "one.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ManifestError, match=r"one\.json: format 99"):
        load_manifest(folder)
    with pytest.raises(ManifestError, match="no image manifest here"):
        load_manifest(tmp_path / "nowhere")


def test_compare_names_the_input_and_the_file_that_changed(tmp_path: Path) -> None:
    content = _tree(tmp_path / "content")
    expected = _record(content, inputs={"recipe_version": 1, "init": HASH})
    assert compare("img", expected, expected).status == IDENTICAL
    (content / "sub" / "data").write_bytes(b"payloaD")
    got = _record(content, inputs={"recipe_version": 1, "init": "d" * 64})
    verdict = compare("img", expected, got, content=content)
    assert verdict.status == DIFFERS and not verdict.passed
    assert verdict.details[0] == f"input init: {HASH[:12]}… -> {'d' * 12}…"
    assert verdict.details[1].startswith("sub/data: 7 bytes, as in the manifest; content differs")
    assert len(verdict.details) == 2  # the other files are the same


def test_same_bytes_from_new_inputs_is_stale_and_new_or_missing_images_fail(tmp_path: Path) -> None:
    content = _tree(tmp_path / "content")
    expected = _record(content)
    stale = compare("img", expected, _record(content, inputs={"recipe_version": 2}))
    assert stale.status == STALE and not stale.passed and "recipe_version: 1 -> 2" in stale.details[0]
    assert compare("img", None, expected).status == NEW
    assert compare("img", expected, None).status == MISSING


def test_a_mode_or_a_link_that_changed_is_named(tmp_path: Path) -> None:
    content = _tree(tmp_path / "content")
    expected = _record(content)
    (content / "run").chmod(0o644)
    (content / "link").unlink()
    (content / "link").symlink_to("run")
    details = compare("img", expected, _record(content), content=content).details
    assert details == ["link: link sub/data -> link run", "run: executable bit x -> -"]


def test_input_changes_reads_nested_inputs_and_lists() -> None:
    old = {"images": {"x86_64": HASH}, "modules": ["a", "b"], "debs": [HASH]}
    new = {"images": {"x86_64": "e" * 64}, "modules": ["b", "a"], "debs": ["f" * 64]}
    assert input_changes(old, new) == [
        f"debs: {HASH[:12]}… -> {'f' * 12}…",
        f"images.x86_64: {HASH[:12]}… -> {'e' * 12}…",
        "modules: same items in another order",
    ]


BUILT_AT = 1_780_000_000.0
HINTS = Hints(("/var/cache/bm",), BUILT_AT, BUILT_AT - 3600)


def _pair(tmp_path: Path, here: bytes, there: bytes) -> tuple[Path, Path]:
    (tmp_path / "here").write_bytes(here)
    (tmp_path / "there").write_bytes(there)
    return tmp_path / "here", tmp_path / "there"


def test_a_timestamp_in_the_differing_bytes_is_named(tmp_path: Path) -> None:
    body = bytes(range(256)) * 8
    here, there = _pair(tmp_path, body + struct.pack("<I", int(BUILT_AT)) + body,
                        body + struct.pack("<I", int(BUILT_AT - 3600)) + body)
    assert why_differs(here, there, HINTS).endswith("from offset 2048: a timestamp")
    here, there = _pair(tmp_path, body + str(int(BUILT_AT)).encode() + body,
                        body + str(int(BUILT_AT) - 3600).encode() + body)
    assert why_differs(here, there, HINTS).endswith(": a timestamp")


def test_bytes_that_look_like_no_time_are_not_called_a_timestamp(tmp_path: Path) -> None:
    body = bytes(range(256)) * 8
    here, there = _pair(tmp_path, body + b"\x01\x02\x03\x04" + body, body + b"\x05\x06\x07\x08" + body)
    assert why_differs(here, there, HINTS) == "4 byte(s) in 1 region(s) from offset 2048"


def test_the_same_content_in_another_order_and_a_path_are_named(tmp_path: Path) -> None:
    here, there = _pair(tmp_path, b"one\ntwo\nthree\n", b"three\none\ntwo\n")
    assert why_differs(here, there, HINTS) == "the same lines in another order"
    here, there = _pair(tmp_path, b"\x00\x01\x02\x03", b"\x03\x02\x01\x00")
    assert why_differs(here, there, HINTS) == "the same bytes in another order"
    here, there = _pair(tmp_path, b"ROOT=/tmp/bm-go-x1y2/src\0", b"ROOT=/tmp/bm-go-a9b8/src\0")
    assert why_differs(here, there, HINTS).endswith(": a path")


def test_one_copy_alone_is_searched_for_a_build_path_or_date(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * (3 << 20) + b"/var/cache/bm/entries" + b"y" * 10)
    assert "'/var/cache/bm' (a build path or date)" in why_differs(tmp_path / "f", None, HINTS)
    (tmp_path / "g").write_bytes(b"built 2026-05-28 by nobody")  # BUILT_AT's date
    assert "'2026-05-28'" in why_differs(tmp_path / "g", None, HINTS)
    (tmp_path / "h").write_bytes(b"nothing to see")
    assert "--rebuild" in why_differs(tmp_path / "h", None, HINTS)


def test_the_recording_store_remembers_every_entry_it_hands_out(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "store")
    assert store.find("a", {"v": 1}) is None and not store.used
    content = store.get("a", {"v": 1}, lambda c: (c / "f").write_text("x"))
    again = RecordingStore(tmp_path / "store")
    assert again.find("a", {"v": 1}) == content
    assert [(u.name, u.inputs, u.content) for u in store.used.values()] == [("a", {"v": 1}, content)]
    assert [u.key for u in again.used.values()] == list(store.used)
