"""`bootmatrix verify`: are the images built here the bytes everybody else built?

Builds (or takes from the store) every image the shipped matrices boot, and the firmware sets that
`bootmatrix compare` sets side by side, through the same provisioning a run uses, with a store that
records each entry handed out. Each one is compared with its file in the committed manifest
(images/manifest.py): identical, or which inputs and files differ and, where it can tell, why.
`--update` writes the manifest from what was built; `--rebuild` builds everything in an empty store
first (sharing only the downloaded .debs, which are checked against the lock anyway), so a difference
can be explained byte by byte against the store's copy.
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.qemu import QemuNotFound
from images.debian.fetch import share_downloads
from images.debian.lock import FIRMWARE_SUITES
from images.manifest import (
    DIFFERS,
    NOT_COMPARABLE,
    STALE,
    Hints,
    ImageRecord,
    RecordingStore,
    Used,
    Verdict,
    compare,
    labelled,
)
from images.recipes.firmware import FirmwareMissing
from images.store import CorruptEntry, Store
from matrix.lab import Lab
from matrix.model import Cell, load_matrix, shipped_matrices
from matrix.provision import CellError, Unavailable, cell_errors

REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass
class Built:
    """What provisioning the matrices used, by label; what could not be had, by cell or set; the
    packages used instead of locked ones (lock drift), if any."""

    images: dict[str, Used]
    errors: dict[str, str] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)


def build_images(lab: Lab, matrices: list[Path], firmware_suites: tuple[str, ...] = FIRMWARE_SUITES,
                 skip: tuple[str, ...] = ()) -> Built:
    """Provision every cell of `matrices` as a run would (its media, QEMU and firmware; no VM) and the
    firmware sets of `firmware_suites`, but cells whose id matches a glob of `skip`. `lab.store` must be
    a RecordingStore."""
    assert isinstance(lab.store, RecordingStore)
    errors: dict[str, str] = {}
    for path in matrices:
        for cell in load_matrix(path):
            if any(fnmatch.fnmatchcase(cell.id, pattern) for pattern in skip):
                continue
            try:
                _provision(lab, cell)
            except CellError as error:
                errors.setdefault(cell.id, str(error).splitlines()[0])
    for suite in firmware_suites:
        try:
            lab.firmware(suite)
        except CellError as error:
            errors[f"firmware set {suite}"] = str(error).splitlines()[0]
    return Built(labelled(lab.store.used.values()), errors, [str(m) for m in lab.drift()])


def _provision(lab: Lab, cell: Cell) -> None:
    """What a cell boots, built as lab.spec() builds it, but without asking QEMU anything (no process
    is started: what is built depends on neither the accelerator nor QEMU's answers)."""
    with cell_errors(cell):
        try:
            lab.qemu(cell.qemu)
            lab.media(cell)
        except (QemuNotFound, FirmwareMissing) as error:
            raise Unavailable(str(error)) from error


def records(built: Built) -> list[ImageRecord]:
    return [ImageRecord.of(label, used) for label, used in built.images.items()]


def _built_at(store: Store, key: str) -> float | None:
    entry = store.entry(key)
    try:
        return float(entry.manifest()["created"])
    except (OSError, CorruptEntry, KeyError, ValueError):
        return None


def verify(
    built: Built, store: Store, expected: dict[str, ImageRecord], *, whole: bool, previous: Store | None = None
) -> list[Verdict]:
    """Each built image against the manifest's `expected` (load_manifest), and, when `whole`, each
    manifest image that was not built. `previous`: another store whose copy of the same entry, where it
    has the manifest's bytes, gives a byte-level reason for a difference."""
    verdicts = []
    paths = (str(store.root), str(Path.home()), str(REPOSITORY), tempfile.gettempdir() + "/")
    for label, used in built.images.items():
        other, other_built = None, None
        if previous is not None and previous.entry(used.key).content.is_dir():
            other, other_built = previous.entry(used.key).content, _built_at(previous, used.key)
        hints = Hints(paths, _built_at(store, used.key) or 0.0, other_built)
        verdict = compare(label, expected.get(label), ImageRecord.of(label, used), content=used.content,
                          other=other, hints=hints)
        if built.drift and verdict.status in {DIFFERS, STALE}:
            verdict.status = NOT_COMPARABLE
            verdict.details.insert(0, "built from re-resolved packages (lock drift): " + "; ".join(built.drift))
        verdicts.append(verdict)
    if whole:
        verdicts += [compare(label, record, None) for label, record in expected.items() if label not in built.images]
    return sorted(verdicts, key=lambda v: v.label)


def failed(verdicts: list[Verdict], built: Built) -> bool:
    return bool(built.errors) or any(not v.passed for v in verdicts)


@contextmanager
def empty_store(cache: Path, keep: bool = False) -> Iterator[RecordingStore]:
    """A store with no entries (its downloads shared with `cache`), removed afterwards unless `keep`."""
    root = Path(tempfile.mkdtemp(prefix="bootmatrix-verify-"))
    try:
        share_downloads(cache, root)
        yield RecordingStore(root)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def default_matrices() -> list[Path]:
    return list(shipped_matrices().values())



