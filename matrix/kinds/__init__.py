"""Image kinds: what a cell boots. Each kind is one module of this package (or a user's own file) with one
class: it checks a cell of its kind, provides its boot media, says how readiness looks on the console,
names the Debian package sets it boots with, whether its VMs may start from a snapshot, and any extra
check `bootmatrix run` makes after the boot (the mostly-source image's compile gate). The matrix model,
the lab and the CLI ask the kind; none of them tests an image name.

A cell's kind is `KINDS[cell.image]`, or the artifact kind when the cell brings its own kernel, ISO,
disk or EFI application. A new kind registers itself (`register(MyKind())`) from its own module; a
matrix file names modules to import with a top-level `imports = ["my_kind.py"]` (as labgrid's
environment files do), and a test suite imports its module like any other.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from arches import KERNEL_OPTIONS
from harness.guestnet import DEFAULT_DHCP
from harness.machine import Machine
from harness.spec import Disk, MachineSpec
from images.debian.lock import busybox_set, kernel_set
from images.recipes.firmware import FirmwareSet
from images.recipes.minimal import MinimalImage
from matrix.firmware import STICK, profile

if TYPE_CHECKING:
    from matrix.model import Cell, Login
    from matrix.profiles import BootMedia
    from matrix.provision import Provisioner
    from matrix.record import BootRecord


@dataclass(frozen=True)
class Readiness:
    """How a boot of a cell becomes ready, worked out once per VM and carried with it: the console
    pattern that means booted (None: a shell that answers is enough), a login to answer, whether a
    shell that answers ends it, the image's own failure messages, how its shell gets a lease, and
    what the shell runs first."""

    marker: str | None
    shell: bool
    login: Login | None = None
    bad_patterns: dict[str, str] = field(default_factory=dict)
    dhcp_command: str = DEFAULT_DHCP
    marker_label: str = "readiness marker"  # what a wait for the marker is called in errors
    # Shell commands run once the shell answers, before anything else (the Debian image turns kernel
    # messages off the console there, so they do not land in the middle of a command's output).
    settle: tuple[str, ...] = ()
    # Console milestones of the image's own, between the kernel and its marker (phase, regex).
    phases: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of_image(cls, image: MinimalImage, shell: bool = True) -> Readiness:
        """An image of ours: its marker, its failure messages and its DHCP command."""
        return cls(image.ready_marker, shell, None, dict(image.bad_patterns), image.dhcp_command)

    def with_cell(self, cell: Cell) -> Readiness:
        """The cell's own additions: its `bad` patterns fail the boot too."""
        bad = self.bad_patterns | {f"matrix bad pattern {pattern!r}": pattern for pattern in cell.bad}
        return replace(self, bad_patterns=bad)


class RunCheck(ABC):
    """An extra check `bootmatrix run` makes of one cell: `after_boot` runs on the booted machine,
    `verdict` judges what it measured (failures, the metrics it adds to the history, and a short
    summary for the run table)."""

    @abstractmethod
    def after_boot(self, machine: Machine, record: BootRecord) -> None: ...

    @abstractmethod
    def verdict(self, baseline: Callable[[str, int], float | None]) -> CheckVerdict:
        """`baseline(metric, min_runs)`: the history's median of earlier runs of this cell and
        configuration, or None with fewer than `min_runs` of them."""


@dataclass
class CheckVerdict:
    failures: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # history metric -> value (seconds)
    summary: str = "-"  # the run table's column for it
    details: dict[str, object] = field(default_factory=dict)  # into summary.json


class ImageKind(ABC):
    """One kind of image. `name` is the matrix file's `image = "..."`."""

    name: ClassVar[str]
    summary_column: ClassVar[str] = ""  # the run table's column for this kind's RunCheck, if any
    metrics: ClassVar[tuple[str, ...]] = ()  # history metrics its RunCheck adds (a matrix file may gate them)

    def check(self, cell: Cell) -> None:
        """Refuse a cell this kind cannot boot (ValueError naming the key): by default, our image on a
        direct boot or from the stick, wherever the firmware boots that."""
        if cell.media == "iso":
            raise ValueError("media \"iso\" boots image = \"tinyboot\", or a cell's own iso = ...")
        if cell.media not in profile(cell.arch, cell.firmware).media:
            raise ValueError(f"media {cell.media!r} cannot boot with {cell.arch}/{cell.firmware}")
        if cell.append and cell.media == "stick":
            raise ValueError(
                "append applies to direct boots only: a stick cell boots the loader entries written on the stick, "
                "which every stick cell shares (put kernel arguments in a media = \"direct\" cell)"
            )

    @abstractmethod
    def media(self, lab: Provisioner, cell: Cell, firmware: FirmwareSet | None) -> BootMedia:
        """The files the cell boots (built through the lab, which builds each once)."""

    def shape(self, cell: Cell, media: BootMedia, spec: MachineSpec) -> MachineSpec:
        """The machine before its firmware: by default the kernel QEMU loads (direct) with the arch's
        console and the kernel options every boot needs, or the stick as a disk."""
        from matrix.profiles import CONSOLE

        if cell.media == "direct":
            assert media.image is not None
            append = f"console={CONSOLE[cell.arch]} {KERNEL_OPTIONS} {cell.append}".strip()
            spec = replace(spec, kernel=media.image.kernel, initrd=media.image.initrd, append=append)
            if media.stick is not None:
                spec = replace(spec, disks=(Disk(media.stick),))
            return spec
        assert media.stick is not None
        return replace(spec, disks=(Disk(media.stick),))

    @abstractmethod
    def readiness(self, lab: Provisioner, cell: Cell) -> Readiness:
        """How the cell's boot becomes ready (the lab adds the cell's own `bad` patterns)."""

    def package_sets(self, lab: Provisioner, cell: Cell) -> list[str]:
        """The lock's package sets the cell boots with (its kernel and busybox by default)."""
        return [kernel_set(cell.arch), busybox_set(cell.arch)]

    def restorable(self, cell: Cell) -> bool:
        """Whether a VM of the cell may start from a snapshot of it booted once."""
        return False

    @property
    def id_suffix(self) -> str:
        """What a cell's id says of its kind after arch-firmware-media: "-<name>" by default."""
        return f"-{self.name}"

    def run_check(self, cell: Cell, matrix_file: Path) -> RunCheck | None:
        """The extra check `bootmatrix run` makes of the cell, given its matrix file; None for none."""
        return None


KINDS: dict[str, ImageKind] = {}
ARTIFACT = "artifact"  # the kind of a cell that brings its own files (not named by `image`)
BUILTIN = ("matrix.kinds.minimal", "matrix.kinds.gosource", "matrix.kinds.tinyboot", "matrix.kinds.ab",
           "matrix.kinds.debian", "matrix.kinds.artifact")


def check_own_boot_medium(cell: Cell, *, media: str, is_a: str, label: str, through: str, command_line: str,
                          bios_arches: tuple[str, ...] = ("x86_64",)) -> None:
    """The rules of a kind that boots from a medium of its own through the boot loaders on it (the
    tinyboot ISO, the A/B disk): that medium, firmware that boots media at all, UEFI or SeaBIOS on an
    arch the BIOS loader runs on, and no `append` (the loaders' configuration holds the command line).
    ValueError in the kind's words: `is_a` ("an ISO"), `label` ("the tinyboot ISO"), `through` (how it
    boots) and `command_line` (where its command line is instead)."""
    firmware = profile(cell.arch, cell.firmware)
    if cell.media != media:
        raise ValueError(f"image = \"{cell.image}\" is {is_a}: media = \"{media}\"")
    if STICK not in firmware.media:
        raise ValueError(f"{cell.arch}/{cell.firmware} boots no {media}: it loads a kernel directly")
    if not firmware.uefi and not (cell.arch in bios_arches and cell.firmware == "seabios"):
        raise ValueError(f"{label} boots through {through}; not {cell.firmware}")
    if cell.append:
        raise ValueError(f"append does not apply to {label}: {command_line}")


def register(kind: ImageKind) -> ImageKind:
    """Make `kind` what cells with `image = kind.name` boot (re-registering the same class is a no-op,
    so a module imported twice is harmless)."""
    known = KINDS.get(kind.name)
    if known is not None and type(known).__qualname__ != type(kind).__qualname__:
        raise ValueError(f"image kind {kind.name!r} is registered already (by {type(known).__module__})")
    KINDS[kind.name] = kind
    return kind


def _builtins() -> None:
    for module in BUILTIN:
        importlib.import_module(module)


def names() -> list[str]:
    """The image names a cell may give."""
    _builtins()
    return sorted(name for name in KINDS if name != ARTIFACT)


def registered() -> list[ImageKind]:
    """Every image kind known now (the built-in ones and those a matrix file imported)."""
    _builtins()
    return list(KINDS.values())


def kind_of(cell: Cell) -> ImageKind:
    _builtins()
    return KINDS[ARTIFACT] if cell.artifact_cell else KINDS[cell.image]


def import_kind_module(path: Path) -> None:
    """Import a user's kind module by path (a matrix file's `imports`); its `register` calls run."""
    name = f"bootmatrix_kind_{path.stem}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
