"""Matrix files: TOML in, validated cells out. A bad file fails with the file, the key and what is wrong.

A cell is one boot configuration: arch x firmware x media (x QEMU build). Its id, `x86_64-seabios-direct`,
is what pytest shows, what `--bootmatrix-cell` selects and what reports are keyed by, so it is derived
from the cell's values and stable across runs.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from arches import ARCHES
from images.debian.lock import DEFAULT_SUITE, FIRMWARE_SUITES

DEFAULT_MATRIX = Path(__file__).with_name("default.toml")
GOSOURCE_MATRIX = Path(__file__).with_name("gosource.toml")  # the mostly-source image's cells and budget

Arch = Literal["x86_64", "aarch64", "riscv64"]  # arches.NAMES; a test checks the two agree

# Which firmware a guest arch can boot with, and through which media (arches.ARCHES; profiles.py says how).
SUPPORTED: dict[str, dict[str, frozenset[str]]] = {a.name: a.firmware_media for a in ARCHES.values()}
FIRMWARE_SETS = FIRMWARE_SUITES  # the Debian suites whose firmware is locked (Cell.firmware_set spells them out)
DEFAULT_FIRMWARE_SET = DEFAULT_SUITE
# Cells that boot no firmware at all: the firmware set does not apply to them.
NO_FIRMWARE = {(a.name, firmware) for a in ARCHES.values() for firmware in a.firmware_free}


class MatrixError(Exception):
    pass


class Cell(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Arch
    firmware: str
    media: Literal["direct", "stick"] = "direct"
    image: Literal["minimal", "gosource"] = "minimal"
    firmware_set: Literal["trixie", "bookworm"] = "trixie"
    qemu: Literal["pinned", "host"] = "pinned"
    accel: Literal["auto", "tcg", "kvm"] = "auto"
    memory_mib: int = Field(512, ge=64, le=16384)
    smp: int = Field(1, ge=1, le=8)
    append: str = ""

    @model_validator(mode="after")
    def _supported(self) -> Cell:
        firmwares = SUPPORTED[self.arch]
        if self.firmware not in firmwares:
            raise ValueError(f"firmware {self.firmware!r} is not available for {self.arch} (have: {sorted(firmwares)})")
        if self.media not in firmwares[self.firmware]:
            raise ValueError(f"media {self.media!r} cannot boot with {self.arch}/{self.firmware}")
        if self.append and self.media == "stick":
            raise ValueError(
                "append applies to direct boots only: a stick cell boots the loader entries written on the stick, "
                "which every stick cell shares (put kernel arguments in a media = \"direct\" cell)"
            )
        if (self.arch, self.firmware) in NO_FIRMWARE and self.firmware_set != DEFAULT_FIRMWARE_SET:
            raise ValueError(f"firmware_set does not apply to {self.arch}/{self.firmware}, which boots no firmware")
        return self

    @property
    def id(self) -> str:
        suffix = "" if self.image == "minimal" else f"-{self.image}"
        suffix += "" if self.firmware_set == DEFAULT_FIRMWARE_SET else f"-{self.firmware_set}"
        suffix += "" if self.qemu == "pinned" else f"-{self.qemu}"
        return f"{self.arch}-{self.firmware}-{self.media}{suffix}"


class GateSpec(BaseModel):
    """A performance gate on a metric of the history: fail a run whose value exceeds the median of the
    previous runs on this host by more than `tolerance` (relative) plus `slack` (absolute)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tolerance: float = Field(0.5, ge=0)
    slack: float = Field(0.5, ge=0)
    min_runs: int = Field(3, ge=1)


class LatencyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    median: float = Field(gt=0)  # seconds
    max: float = Field(gt=0)


class CompileBudget(BaseModel):
    """`[compile_budget]`: first-call latency budgets of on-demand compiled commands, per accelerator,
    and how far above the stored baseline (relative) a cell's median may go. See matrix/latency.py."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kvm: LatencyLimits
    tcg: LatencyLimits
    baseline_tolerance: float = Field(0.2, ge=0)
    min_runs: int = Field(3, ge=1)

    def for_accel(self, accel: str) -> LatencyLimits:
        return self.kvm if accel == "kvm" else self.tcg


class MatrixFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, Any] = Field(default_factory=dict)
    cell: list[dict[str, Any]] = Field(min_length=1)
    gates: dict[str, GateSpec] = Field(default_factory=dict)
    compile_budget: CompileBudget | None = None


def _where(loc: tuple[int | str, ...], cells: list[dict[str, Any]] | None = None) -> str:
    parts = []
    for item in loc:
        parts.append(f"[{item}]" if isinstance(item, int) else f".{item}")
    return "".join(parts).lstrip(".")


def load_matrix(path: Path = DEFAULT_MATRIX) -> list[Cell]:
    """Cells of a matrix file, sorted by id; duplicate ids are an error."""
    return load_matrix_file(path)[0]


def load_gates(path: Path = DEFAULT_MATRIX) -> dict[str, GateSpec]:
    """The `[gates.<metric>]` tables of a matrix file."""
    return load_matrix_file(path)[1]


def load_compile_budget(path: Path = DEFAULT_MATRIX) -> CompileBudget | None:
    """The `[compile_budget]` table of a matrix file, if it has one."""
    return _load(path)[2]


def load_matrix_file(path: Path) -> tuple[list[Cell], dict[str, GateSpec]]:
    cells, gates, _ = _load(path)
    return cells, gates


def _load(path: Path) -> tuple[list[Cell], dict[str, GateSpec], CompileBudget | None]:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise MatrixError(f"{path}: no such matrix file") from None
    except tomllib.TOMLDecodeError as error:
        raise MatrixError(f"{path}: not valid TOML: {error}") from None
    try:
        document = MatrixFile.model_validate(raw)
    except ValidationError as error:
        raise MatrixError(_format(path, error)) from None
    cells: list[Cell] = []
    for index, values in enumerate(document.cell):
        merged = {**document.defaults, **values}
        try:
            cells.append(Cell.model_validate(merged))
        except ValidationError as error:
            raise MatrixError(_format(path, error, prefix=f"cell[{index}]")) from None
    seen: dict[str, int] = {}
    for index, cell in enumerate(cells):
        if cell.id in seen:
            raise MatrixError(f"{path}: cell[{index}]: duplicate cell id {cell.id!r} (same as cell[{seen[cell.id]}])")
        seen[cell.id] = index
    return sorted(cells, key=lambda c: c.id), dict(document.gates), document.compile_budget


def _format(path: Path, error: ValidationError, prefix: str = "") -> str:
    lines = []
    for problem in error.errors():
        key = _where(tuple(problem["loc"]))
        where = ".".join(p for p in (prefix, key) if p) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{path}: {where}: {message}")
    return "\n".join(lines)


def matches(cell: Cell, filters: Mapping[str, object]) -> bool:
    """Whether the cell's fields equal the filters (a list or tuple value means any of them); the filter
    `where` is a predicate on the whole cell."""
    for key, wanted in filters.items():
        if key == "where":
            if not callable(wanted) or not wanted(cell):
                return False
            continue
        value = getattr(cell, key)
        if isinstance(wanted, list | tuple | set) and value not in wanted:
            return False
        if not isinstance(wanted, list | tuple | set) and value != wanted:
            return False
    return True


def select(cells: list[Cell], arches: list[str] | None = None, ids: list[str] | None = None) -> list[Cell]:
    chosen = [c for c in cells if not arches or c.arch in arches]
    if ids:
        unknown = sorted(set(ids) - {c.id for c in cells})
        if unknown:
            raise MatrixError(f"unknown cell id(s) {unknown}; known: {[c.id for c in cells]}")
        chosen = [c for c in chosen if c.id in ids]
    return chosen
