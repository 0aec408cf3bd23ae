"""Matrix files: TOML in, validated cells out. A bad file fails with the file, the key and what is wrong.

A cell is one boot configuration: arch x firmware x media (x QEMU build). Its id, `x86_64-seabios-direct`,
is what pytest shows, what `--bootmatrix-cell` selects and what reports are keyed by, so it is derived
from the cell's values and stable across runs.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arches import NAMES
from images.debian.lock import DEFAULT_SUITE, FIRMWARE_SUITES
from matrix.firmware import profiles_of
from matrix.latency import CompileBudget

SHIPPED_MATRICES = Path(__file__).parent  # default.toml, examples.toml, ...: `bootmatrix run NAME`
DEFAULT_MATRIX = SHIPPED_MATRICES / "default.toml"
GOSOURCE_MATRIX = Path(__file__).with_name("gosource.toml")  # the mostly-source image's cells and budget

FIRMWARE_SETS = FIRMWARE_SUITES  # the Debian suites whose firmware is locked
DEFAULT_IMAGE = "minimal"  # a cell's image kind when it names none
DEFAULT_FIRMWARE_SET = DEFAULT_SUITE


def one_of(choices: tuple[str, ...] | list[str], what: str) -> AfterValidator:
    """A field whose value must be one of `choices`, which come from the table that owns them (the arch
    table, the lock's firmware suites), so the model copies no list."""

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{what} {value!r} is not one of {', '.join(choices)}")
        return value

    return AfterValidator(check)


class MatrixError(Exception):
    pass


SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class Artifact(BaseModel):
    """A user's file for a cell (matrix keys kernel, initrd, dtb, iso, disk, efi, code, vars, bios).

    In TOML either a string (a path, relative to the matrix file) or a table with exactly one source:
    `path`; `url` + `sha256` (downloaded once into the store, refused on a mismatch); `deb` + `path`
    (a file of a Debian package in the lock: `bootmatrix lock --add NAME`); or `image = "minimal"`,
    this project's own kernel or initramfs of the cell's arch (a user's kernel with our initramfs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    size: int | None = Field(None, gt=0)  # bytes, with url: the download stops there (else at a cap)
    deb: str | None = None
    image: Literal["minimal"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        return {"path": str(value)} if isinstance(value, str | Path) else value

    @model_validator(mode="after")
    def _one_source(self) -> Artifact:
        sources = [k for k in ("url", "deb", "image") if getattr(self, k) is not None]
        if self.path is not None and self.deb is None:
            sources.append("path")
        if len(sources) != 1:
            raise ValueError("give exactly one source: a path, url + sha256, deb + path, or image = \"minimal\""
                             + (f" (got {', '.join(sources)})" if sources else ""))
        if self.url is not None and (self.sha256 is None or not SHA256.match(self.sha256)):
            raise ValueError("url needs sha256 = \"<64 hex digits>\" (the download is verified against it)")
        if self.sha256 is not None and self.url is None:
            raise ValueError("sha256 applies to url only")
        if self.size is not None and self.url is None:
            raise ValueError("size applies to url only")
        if self.url is not None and not re.match(r"(?i)^https?://", self.url):
            raise ValueError(f"url {self.url!r}: only http:// and https:// URLs are fetched")
        if self.deb is not None and not self.path:
            raise ValueError("deb needs path, the file inside the package (e.g. path = \"usr/lib/ipxe/ipxe.iso\")")
        return self

    def relative_to(self, folder: Path) -> Artifact:
        """The artifact with a relative local path made absolute against `folder` (the matrix file's)."""
        if self.path is None or self.deb is not None or Path(self.path).is_absolute():
            return self
        return self.model_copy(update={"path": str((folder / self.path).resolve())})

    def label(self) -> str:
        """A short name for the cell id: the file's stem (ipxe.iso -> ipxe)."""
        if self.image is not None:
            return self.image
        name = PurePosixPath(self.path or self.url or "").name
        return name.split(".")[0] or "artifact"


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str
    password: str = ""


# Keys naming a user's files, and the media each boots through (the first one present decides).
BOOT_ARTIFACTS = {"kernel": "direct", "iso": "iso", "disk": "disk", "efi": "efi"}
ARTIFACT_KEYS = ("kernel", "initrd", "dtb", "iso", "disk", "efi", "code", "vars", "bios")


def _regex(pattern: str) -> str:
    """A pattern the console will search for: refused here, naming the key, when it does not compile
    (not when the second cell of a run reaches it)."""
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"{pattern!r} is not a valid regular expression: {error}") from None
    return pattern


def _known_image(value: str) -> str:
    from matrix.kinds import names

    if value not in names():
        raise ValueError(f"image {value!r} is not a known image kind (known: {', '.join(names())}; a matrix file's "
                         "`imports` brings more)")
    return value


class Cell(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Annotated[str, one_of(NAMES, "arch")]
    firmware: str
    media: Literal["direct", "stick", "iso", "disk", "efi"] = "direct"
    image: Annotated[str, AfterValidator(_known_image)] = DEFAULT_IMAGE  # an image kind (matrix/kinds/)
    firmware_set: Annotated[str, one_of(list(FIRMWARE_SETS), "firmware_set")] = DEFAULT_FIRMWARE_SET
    qemu: Literal["pinned", "host"] = "pinned"
    accel: Literal["auto", "tcg", "kvm"] = "auto"
    memory_mib: int = Field(512, ge=64, le=16384, strict=True)  # strict: `smp = true` is not 1
    smp: int = Field(1, ge=1, le=8, strict=True)
    append: str = ""
    # Bring your own artifact (README "Bring your own image"): a cell with one of kernel/iso/disk/efi
    # boots the user's file instead of this project's images.
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.+-]+$")  # the cell id's last part
    kernel: Artifact | None = None
    initrd: Artifact | None = None
    dtb: Artifact | None = None
    iso: Artifact | None = None
    disk: Artifact | None = None
    efi: Artifact | None = None
    code: Artifact | None = None
    vars: Artifact | None = None
    bios: Artifact | None = None
    ready: str | None = None  # a regex that means "booted" (default: a shell that answers)
    login: Login | None = None  # answered at a login prompt, then a shell is expected
    bad: tuple[str, ...] = ()  # more regexes that fail the boot at once
    console: str | None = None  # the kernel's console device (console=...); "" adds none
    machine_options: tuple[str, ...] = ()  # added to -machine (e.g. "acpi=off")
    timeout: float | None = Field(None, gt=0)  # seconds to readiness before it is a hang

    @model_validator(mode="before")
    @classmethod
    def _media_of_artifacts(cls, values: object) -> object:
        if isinstance(values, dict) and "media" not in values:
            for key, media in BOOT_ARTIFACTS.items():
                if values.get(key) is not None:
                    return {**values, "media": media}
        return values

    @model_validator(mode="after")
    def _supported(self) -> Cell:
        profiles = profiles_of(self.arch)
        if self.firmware not in profiles:
            raise ValueError(f"firmware {self.firmware!r} is not available for {self.arch} (have: {sorted(profiles)})")
        if not profiles[self.firmware].runs_firmware and self.firmware_set != DEFAULT_FIRMWARE_SET:
            raise ValueError(f"firmware_set does not apply to {self.arch}/{self.firmware}, which boots no firmware")
        if not self.artifact_cell:
            for key in ("ready", "login", "console", "name", "initrd", "dtb", "code", "vars", "bios"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} applies to cells that boot their own artifact (kernel, iso, disk, efi)")
        from matrix.kinds import kind_of

        kind_of(self).check(self)  # what the image kind itself can boot (matrix/kinds/)
        return self

    @field_validator("ready")
    @classmethod
    def _ready_compiles(cls, value: str | None) -> str | None:
        return value if value is None else _regex(value)

    @field_validator("bad")
    @classmethod
    def _bad_compile(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_regex(pattern) for pattern in value)

    @property
    def artifact_cell(self) -> bool:
        """Whether the cell boots a user's file (kernel, iso, disk or efi) rather than our images."""
        return any(getattr(self, key) is not None for key in BOOT_ARTIFACTS)

    def artifacts(self) -> dict[str, Artifact]:
        return {key: value for key in ARTIFACT_KEYS if (value := getattr(self, key)) is not None}

    @property
    def id(self) -> str:
        if self.artifact_cell:
            label = self.name or next(getattr(self, k) for k in BOOT_ARTIFACTS if getattr(self, k)).label()
            return f"{self.arch}-{self.firmware}-{self.media}-{label}"
        from matrix.kinds import kind_of

        suffix = kind_of(self).id_suffix
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


class MatrixFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, Any] = Field(default_factory=dict)
    cell: list[dict[str, Any]] = Field(min_length=1)
    gates: dict[str, GateSpec] = Field(default_factory=dict)
    compile_budget: CompileBudget | None = None
    # Python files (relative to the matrix file) that register image kinds of their own (matrix/kinds/).
    imports: list[str] = Field(default_factory=list)


def _where(loc: tuple[int | str, ...], cells: list[dict[str, Any]] | None = None) -> str:
    parts = []
    for item in loc:
        parts.append(f"[{item}]" if isinstance(item, int) else f".{item}")
    return "".join(parts).lstrip(".")


def shipped_matrices() -> dict[str, Path]:
    """The matrix files that come with bootmatrix, by name (`bootmatrix run gosource`)."""
    return {path.stem: path for path in sorted(SHIPPED_MATRICES.glob("*.toml"))}


def matrix_path(value: str | Path) -> Path:
    """A matrix named on the command line or in pytest's configuration: a path, or the name of a shipped
    one (`examples`, `gosource`) when no such file is here. A path keeps working: `./gosource` with no
    .toml, a file that exists, anything with a slash is taken as a path."""
    text = str(value)
    path = Path(text).expanduser()
    if "/" in text or path.suffix or path.exists():
        return path
    return shipped_matrices().get(text, path)


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


def gate_metrics() -> set[str]:
    """The metrics a `[gates.<metric>]` table may name: each boot phase's time, and what the image kinds
    registered now measure (matrix/kinds/)."""
    from harness.timeline import BOOT_PHASES
    from matrix.kinds import registered

    return {f"t_{phase}" for phase in BOOT_PHASES} | {m for kind in registered() for m in kind.metrics}


def _load(path: Path) -> tuple[list[Cell], dict[str, GateSpec], CompileBudget | None]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MatrixError(f"{path}: no such matrix file") from None
    except IsADirectoryError:
        raise MatrixError(f"{path}: is a folder, not a matrix file") from None
    except UnicodeDecodeError as error:
        raise MatrixError(f"{path}: not UTF-8 text (byte {error.start}): a matrix file is TOML") from None
    except OSError as error:  # a symlink loop, permission denied, ...
        raise MatrixError(f"{path}: cannot be read: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise MatrixError(f"{path}: not valid TOML: {error}") from None
    try:
        document = MatrixFile.model_validate(raw)
    except ValidationError as error:
        raise MatrixError(_format(path, error)) from None
    for index, module in enumerate(document.imports):
        _import_kinds(path.parent / module, f"{path}: imports[{index}]")
    known = gate_metrics()
    for metric in document.gates:
        if metric not in known:
            raise MatrixError(f"{path}: gates.{metric}: not a metric a run records (known: {', '.join(sorted(known))})")
    cells: list[Cell] = []
    for index, values in enumerate(document.cell):
        merged = {**document.defaults, **values}
        try:
            cell = Cell.model_validate(merged)
        except ValidationError as error:
            raise MatrixError(_format(path, error, prefix=f"cell[{index}]")) from None
        cells.append(with_local_paths(cell, path.parent, f"{path}: cell[{index}]"))
    seen: dict[str, int] = {}
    for index, cell in enumerate(cells):
        if cell.id in seen:
            raise MatrixError(f"{path}: cell[{index}]: duplicate cell id {cell.id!r} (same as cell[{seen[cell.id]}])")
        seen[cell.id] = index
    return sorted(cells, key=lambda c: c.id), dict(document.gates), document.compile_budget


def _import_kinds(module: Path, where: str) -> None:
    """A matrix file's `imports`: a Python file that registers image kinds; one line naming the key
    when it is missing or fails to import."""
    from matrix.kinds import import_kind_module

    if not module.is_file():
        raise MatrixError(f"{where}: {module} does not exist")
    try:
        import_kind_module(module.resolve())
    except Exception as error:  # noqa: BLE001 - a user's module may raise anything; say which and why
        raise MatrixError(f"{where}: importing {module} failed: {type(error).__name__}: {error}") from None


def with_local_paths(cell: Cell, folder: Path, where: str, key_format: str = "{where}.{key}") -> Cell:
    """The cell with its local artifact paths made absolute against `folder`; a file that is not there
    is a MatrixError naming `where`, the key and the path, before anything is built or started."""
    update: dict[str, Artifact] = {}
    for key, artifact in cell.artifacts().items():
        absolute = artifact.relative_to(folder)
        if absolute.path is not None and absolute.deb is None and not Path(absolute.path).is_file():
            given = f" (given as {artifact.path!r})" if artifact.path != absolute.path else ""
            name = key_format.format(where=where, key=key)
            problem = "is a folder, not a file" if Path(absolute.path).is_dir() else "does not exist"
            raise MatrixError(f"{name}: {absolute.path} {problem}{given}")
        update[key] = absolute
    return cell.model_copy(update=update) if update else cell


# Cell keys whose command-line option is spelt otherwise (matrix/cli.py).
OPTION_OF_KEY = {"memory_mib": "memory", "console": "console-device", "machine_options": "machine-option"}


def cell_from_options(values: Mapping[str, object], folder: Path) -> Cell:
    """A cell from command-line options (`bootmatrix run --arch riscv64 --kernel ./Image ...`): the
    same keys as a matrix file, local paths relative to `folder`; errors name the option."""
    given = {key: value for key, value in values.items() if value not in (None, (), [])}
    try:
        cell = Cell.model_validate(given)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            field = str(problem["loc"][0]) if problem["loc"] else ""
            key = OPTION_OF_KEY.get(field, field.replace("_", "-"))
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"command line: --{key}: {message}" if key else f"command line: {message}")
        raise MatrixError("\n".join(lines)) from None
    return with_local_paths(cell, folder, "command line", "{where}: --{key}")


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
