"""The image manifest: the bytes of every image the shipped matrices boot, committed beside the lock, so
that any machine can check it built the very same images (`bootmatrix verify`).

Like live-bootstrap's SHA256SUMS, but for our outputs: one JSON file per image under images/manifest/,
holding the image's label, its store name, key and inputs (the lock's sha256s, recipe versions, hashes
of the guest sources it is made from), the store's content hash, and one line per file of the image:
`<sha256> <size> <x|->` (x: executable), `link <target>` or `folder` (an empty one). Each line is one
path, so a change of bytes shows in `git diff` as the files that changed.

This module knows nothing of matrices: it records which store entries were used (RecordingStore), lists
them, reads and writes the manifest, and compares one image with its manifest, saying where it can why a
file differs (a build path or a timestamp in it, the same bytes in another order). What to build is the
caller's (matrix/verify.py).
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from images.store import Builder, Store, TreePath, file_sha256, inputs_key, tree_digest, tree_paths

MANIFEST_DIR = Path(__file__).with_name("manifest")
FORMAT = 1
HEX64 = re.compile(r"[0-9a-f]{64}")


class ManifestError(Exception):
    """A manifest file that cannot be read: one line naming it."""


@dataclass(frozen=True)
class Used:
    """A store entry a run used: its name, inputs, key and content folder."""

    name: str
    inputs: dict[str, Any]
    content: Path

    @property
    def key(self) -> str:
        return inputs_key({"name": self.name, **self.inputs})


class RecordingStore(Store):
    """A Store that remembers every entry `find` or `get` handed out, in the order first used."""

    def __init__(self, root: Path | None = None, lock_timeout: float = 3600.0):
        super().__init__(root, lock_timeout)
        self.used: dict[str, Used] = {}
        self._used_lock = threading.Lock()

    def _record(self, name: str, inputs: Mapping[str, Any], content: Path) -> None:
        used = Used(name, json.loads(json.dumps(dict(inputs))), content)
        with self._used_lock:
            self.used.setdefault(used.key, used)

    def find(self, name: str, inputs: Mapping[str, Any]) -> Path | None:
        found = super().find(name, inputs)
        if found is not None:
            self._record(name, inputs, found)
        return found

    def get(self, name: str, inputs: Mapping[str, Any], build: Builder) -> Path:
        content = super().get(name, inputs, build)
        self._record(name, inputs, content)
        return content


def labelled(used: Iterable[Used]) -> dict[str, Used]:
    """Each entry under a label that stays the same when its inputs change: its store name, and where
    several entries share a name (one EFI disk per arch), the plain-word inputs that tell them apart
    (`efi-disk[name=BOOTX64.EFI]`); hashes never go into a label."""
    by_name: dict[str, list[Used]] = {}
    for entry in used:
        by_name.setdefault(entry.name, []).append(entry)
    labels: dict[str, Used] = {}
    for name, group in by_name.items():
        if len(group) == 1:
            labels[name] = group[0]
            continue
        words = sorted({k for e in group for k, v in e.inputs.items() if isinstance(v, str) and not HEX64.fullmatch(v)})
        telling = [k for k in words if len({str(e.inputs.get(k)) for e in group}) > 1]
        for entry in group:
            label = f"{name}[{','.join(f'{k}={entry.inputs.get(k)}' for k in telling)}]"
            if label in labels or not telling:
                label = f"{name}[{entry.key[:12]}]"
            labels[label] = entry
    return dict(sorted(labels.items()))


def listing(paths: list[TreePath]) -> dict[str, str]:
    """One line per path of a content folder (its tree_paths): `<sha256> <size> <x|->`, `link <target>`,
    or `folder` for an empty folder (a folder with files in it is implied by them)."""
    lines: dict[str, str] = {}
    parents = {entry.rel.rpartition("/")[0] for entry in paths}
    for entry in paths:
        if stat.S_ISLNK(entry.mode):
            lines[entry.rel] = f"link {entry.detail}"
        elif stat.S_ISDIR(entry.mode):
            if entry.rel not in parents:
                lines[entry.rel] = "folder"
        else:
            lines[entry.rel] = f"{entry.detail} {entry.size} {'x' if entry.executable else '-'}"
    return lines


@dataclass(frozen=True)
class ImageRecord:
    """What the manifest says of one image (or what was built here, in the same shape)."""

    label: str
    name: str
    key: str
    inputs: dict[str, Any]
    content_sha256: str
    files: dict[str, str]

    @classmethod
    def of(cls, label: str, used: Used) -> ImageRecord:
        paths = tree_paths(used.content)  # each file read once, for the tree hash and the listing
        return cls(label, used.name, used.key, used.inputs, tree_digest(paths), listing(paths))

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "label": self.label, "name": self.name, "key": self.key,
                "inputs": self.inputs, "content_sha256": self.content_sha256, "files": self.files}


def file_name(label: str) -> str:
    """The manifest file of an image: its label with anything but plain characters as `_`."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", label).strip("_") + ".json"


def load_manifest(folder: Path = MANIFEST_DIR) -> dict[str, ImageRecord]:
    """Every image of the manifest folder, by label; ManifestError naming the file that is not one."""
    records: dict[str, ImageRecord] = {}
    if not folder.is_dir():
        raise ManifestError(f"{folder}: no image manifest here (write one with `bootmatrix verify --update`)")
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT:
                raise ManifestError(f"{path}: format {data.get('format')!r}, this bootmatrix reads {FORMAT}")
            record = ImageRecord(str(data["label"]), str(data["name"]), str(data["key"]), dict(data["inputs"]),
                                 str(data["content_sha256"]), {str(k): str(v) for k, v in data["files"].items()})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError,
                ValueError) as error:
            if isinstance(error, ManifestError):
                raise
            raise ManifestError(f"{path}: not an image manifest ({type(error).__name__}: {error})") from None
        records[record.label] = record
    return records


def write_manifest(records: Iterable[ImageRecord], folder: Path = MANIFEST_DIR, *, prune: bool = True) -> list[str]:
    """Write one file per image and, with `prune` (the records are every image), remove those of images
    no longer built; the labels whose file changed."""
    folder.mkdir(parents=True, exist_ok=True)
    changed, wanted = [], set()
    for record in records:
        path = folder / file_name(record.label)
        wanted.add(path.name)
        text = json.dumps(record.as_json(), indent=1, sort_keys=True) + "\n"
        if not path.exists() or path.read_text() != text:
            temporary = path.with_name(f".{path.name}.{os.getpid()}")
            temporary.write_text(text)
            os.replace(temporary, path)
            changed.append(record.label)
    for path in folder.glob("*.json") if prune else ():
        if path.name not in wanted:
            path.unlink()
            changed.append(path.stem)
    return sorted(changed)


# --- comparing ------------------------------------------------------------------------------------

IDENTICAL, DIFFERS, STALE, NEW, MISSING, NOT_COMPARABLE = (
    "identical", "differs", "stale", "not in manifest", "not built", "not comparable")
PASSING = {IDENTICAL, NOT_COMPARABLE}


@dataclass
class Verdict:
    """One image compared with its manifest. `details`: what differs (inputs, then files), one line each."""

    label: str
    status: str
    expected: str = "-"
    got: str = "-"
    details: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status in PASSING


def input_changes(old: Any, new: Any, where: str = "") -> list[str]:
    """The inputs that differ, by their path in the inputs document (`kernel: e989… -> 12ab…`)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new))
                for line in input_changes(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))]
    if isinstance(old, list) and isinstance(new, list) and old != new:
        gone, added = [v for v in old if v not in new], [v for v in new if v not in old]
        if not gone and not added:
            return [f"{where}: same items in another order"]
        return [f"{where}: {', '.join(_short(v) for v in gone) or '-'} -> {', '.join(_short(v) for v in added) or '-'}"]
    return [] if old == new else [f"{where}: {_short(old)} -> {_short(new)}"]


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return f"{text[:12]}…" if HEX64.fullmatch(text) else (text if len(text) <= 60 else text[:57] + "...")


@dataclass(frozen=True)
class Hints:
    """What a build of this machine may have left in a file: its paths and its date."""

    paths: tuple[str, ...]
    built_at: float
    other_built_at: float | None = None  # when the copy with the manifest's bytes was built

    def dates(self) -> list[bytes]:
        when = time.gmtime(self.built_at)
        return [time.strftime(f, when).encode() for f in ("%Y-%m-%d", "%Y%m%d%H", "%b %e %Y", "%d %b %Y")]


def compare(label: str, expected: ImageRecord | None, got: ImageRecord | None, *, content: Path | None = None,
            other: Path | None = None, hints: Hints | None = None) -> Verdict:
    """`got` (built here, its files in `content`) against `expected` (the manifest). `other`: a copy of
    the same image with the expected bytes, when there is one (`verify --rebuild` keeps the store's),
    for a byte-level reason."""
    if expected is None:
        assert got is not None
        return Verdict(label, NEW, "-", got.content_sha256[:12], ["not in the manifest: `bootmatrix verify --update`"])
    if got is None:
        return Verdict(label, MISSING, expected.content_sha256[:12], "-", [
            "in the manifest, not built by the matrices"])
    verdict = Verdict(label, IDENTICAL, expected.content_sha256[:12], got.content_sha256[:12])
    inputs = input_changes(expected.inputs, got.inputs) if expected.key != got.key else []
    files = file_changes(expected.files, got.files, content, other, hints)
    if expected.content_sha256 != got.content_sha256:
        verdict.status = DIFFERS
        verdict.details = [f"input {line}" for line in inputs] + (
            files or ["every file is the same: a mode, link or empty folder differs"])
    elif inputs:
        verdict.status = STALE
        verdict.details = [f"input {line}" for line in inputs] + ["same bytes: the manifest's inputs are out of date"]
    return verdict


def file_changes(expected: dict[str, str], got: dict[str, str], content: Path | None, other: Path | None,
                 hints: Hints | None) -> list[str]:
    lines = []
    for path in sorted(set(expected) | set(got)):
        want, have = expected.get(path), got.get(path)
        if want == have:
            continue
        if want is None:
            lines.append(f"{path}: not in the manifest ({have})")
        elif have is None:
            lines.append(f"{path}: missing (manifest: {want})")
        elif want.split()[:2] == have.split()[:2]:
            lines.append(f"{path}: executable bit {want.split()[-1]} -> {have.split()[-1]}")
        elif want.startswith(("link", "folder")) or have.startswith(("link", "folder")):
            lines.append(f"{path}: {want} -> {have}")
        else:
            here = content / path if content is not None else None
            there = other / path if other is not None else None
            if there is not None and not (there.is_file() and file_sha256(there) == want.split()[0]):
                there = None  # only a copy with the manifest's bytes explains the difference
            lines.append(f"{path}: {_sizes(want, have)}; {why_differs(here, there, hints)}")
    return lines


def _sizes(want: str, have: str) -> str:
    a, b = int(want.split()[1]), int(have.split()[1])
    return f"{b} bytes, as in the manifest" if a == b else f"{a} bytes in the manifest, {b} here"


# --- why a file differs ---------------------------------------------------------------------------

CHUNK = 1 << 20
PATHISH = re.compile(rb"/(?:tmp|root|home|var)/|/bm-[a-z]+-")  # a host path, a scratch_dir() folder
MAX_REGIONS = 64  # differing byte regions looked at (a file that differs throughout needs only a few)


def why_differs(here: Path | None, there: Path | None, hints: Hints | None) -> str:
    """Where it can tell, why the file built here differs: from the two copies when there are both (the
    same bytes in another order; the regions that differ hold a timestamp or a path), else from this
    copy alone (it holds a build path or the build's date)."""
    if here is None or not here.is_file():
        return "content differs"
    if there is not None:
        return _two_sided(here, there, hints)
    if hints is not None:
        found = _grep(here, [p.encode() for p in hints.paths if p] + hints.dates())
        if found:
            return f"content differs; it holds {found.decode(errors='replace')!r} (a build path or date)"
    return "content differs (run `bootmatrix verify --rebuild` beside a matching build for a byte-level reason)"


def _grep(path: Path, needles: list[bytes]) -> bytes | None:
    overlap = max((len(n) for n in needles), default=0)
    tail = b""
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            window = tail + chunk
            for needle in needles:
                if needle in window:
                    return needle
            tail = window[-overlap:]
    return None


def _regions(a: Path, b: Path) -> tuple[int, list[tuple[int, int]]]:
    """The bytes that differ over the common length, counted, and their regions [start, end), up to
    MAX_REGIONS (the scan stops there: the count is then a lower bound). Blocks that are equal are
    skipped whole; only a differing block is looked at byte by byte."""
    count, regions = 0, list[tuple[int, int]]()
    start: int | None = None
    block = 4096
    with a.open("rb") as left, b.open("rb") as right:
        offset = 0
        while len(regions) < MAX_REGIONS:
            x, y = left.read(CHUNK), right.read(CHUNK)
            n = min(len(x), len(y))
            if n == 0:
                break
            for base in range(0, n, block) if x[:n] != y[:n] else ():
                if x[base:base + block] == y[base:base + block]:
                    if start is not None:
                        regions.append((start, offset + base))
                        start = None
                    continue
                for i in range(base, min(base + block, n)):
                    if x[i] != y[i]:
                        count += 1
                        start = offset + i if start is None else start
                    elif start is not None:
                        regions.append((start, offset + i))
                        start = None
                if len(regions) >= MAX_REGIONS:
                    break
            offset += n
    if start is not None and len(regions) < MAX_REGIONS:
        regions.append((start, offset))
    return count, regions


def _two_sided(here: Path, there: Path, hints: Hints | None) -> str:
    size_here, size_there = here.stat().st_size, there.stat().st_size
    if size_here == size_there and size_here <= 64 * CHUNK:
        a, b = here.read_bytes(), there.read_bytes()
        if sorted(a.splitlines()) == sorted(b.splitlines()):
            return "the same lines in another order"
        if sorted(a) == sorted(b):
            return "the same bytes in another order"
    count, regions = _regions(here, there)
    if not regions:
        return f"one is a prefix of the other ({size_there} bytes -> {size_here})"
    with here.open("rb") as left, there.open("rb") as right:
        kinds = {_kind(_window(left, r), _window(right, r), hints) for r in regions}
    more = "+" if len(regions) == MAX_REGIONS else ""
    where = f"{count}{more} byte(s) in {len(regions)}{more} region(s) from offset {regions[0][0]}"
    named = sorted(k for k in kinds if k)
    return f"{where}: {' and '.join(named)}" if named else where


def _window(handle: Any, region: tuple[int, int], margin: int = 12) -> bytes:
    start = max(0, region[0] - margin)
    handle.seek(start)
    return bytes(handle.read(region[1] + margin - start))


def _kind(a: bytes, b: bytes, hints: Hints | None) -> str:
    """What a differing region looks like: a path on either side, or a timestamp (seconds since 1970,
    as a 32-bit integer of either byte order or as ten digits) at the same place on both sides, each
    within a day of its own build."""
    if PATHISH.search(a) or PATHISH.search(b):
        return "a path"
    if hints is None:
        return ""
    spans = [(t - 86400, t + 86400) for t in (hints.built_at, hints.other_built_at or hints.built_at)]

    def near(value: int) -> bool:
        return any(lo <= value <= hi for lo, hi in spans)

    for i in range(min(len(a), len(b)) - 3):
        for order in ("little", "big"):
            x = int.from_bytes(a[i:i + 4], order)
            y = int.from_bytes(b[i:i + 4], order)
            if x != y and near(x) and near(y):
                return "a timestamp"
    digits_a, digits_b = re.findall(rb"\d{10}", a), re.findall(rb"\d{10}", b)
    if any(near(int(x)) for x in digits_a) and any(near(int(y)) for y in digits_b):
        return "a timestamp"
    return ""
