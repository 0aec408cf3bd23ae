"""Provisioning: everything a cell needs before a guest runs, each built once per process (and once
across processes, through the store): the Debian fetcher of a suite, the pinned QEMU, our minimal
image, the stick, the firmware sets, the mostly-source image, the tinyboot ISOs, a cell's own files.

One error hierarchy comes out of it: CellError, either Unavailable ("cannot run here": packages that
cannot be fetched, a missing host tool, no QEMU) or CellBroken ("broken": an image that could not be
built, a user's file that cannot be had). The lab raises nothing else before a guest runs, and the CLI
and the pytest plugin each turn it into an outcome in one place.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from arches import ARCHES, NAMES
from harness.paths import CannotWrite
from harness.qemu import QemuInstall
from images.artifacts import ArtifactError, ArtifactSource, checked_disk, efi_disk, resolve
from images.debian.fetch import DebianFetcher, FetchError, Moved
from images.debian.lock import LockError, Lockfile, lock_path, qemu_set
from images.debian.mirror import MirrorNotFound
from images.recipes.ab import AbImage, Slot, build_ab_image, build_agent, build_slot
from images.recipes.debian import DebianRoot, GuestJob, build_debian_root
from images.recipes.debian_disk import DebianDisk, build_debian_disk
from images.recipes.firmware import FirmwareSet, firmware_set
from images.recipes.goplans import build_plans
from images.recipes.gosource import GoSourceImage, build_go_root, build_gosource_image, build_programs, build_stage1
from images.recipes.minimal import MinimalImage, build_minimal
from images.recipes.qemu import pinned_qemu_prefix
from images.recipes.stick import build_stick
from images.recipes.tinyboot import TinybootIso, build_app, build_tinyboot_iso
from images.store import Store
from images.tools import BuildError, ToolMissing
from matrix.kinds import kind_of
from matrix.model import DEFAULT_FIRMWARE_SET, Cell

T = TypeVar("T")
log = logging.getLogger(__name__)
# What makes a build "cannot run here" rather than broken: the network or mirror, a missing host tool.
CANNOT_RUN_HERE = (FetchError, MirrorNotFound, ToolMissing)


class CellError(Exception):
    """Why a cell cannot boot, before any guest runs. `cannot_run`: it cannot run here (a skip, or an
    error in strict mode); otherwise it is broken (a failed cell). `detail`: the whole story (a build
    tool's full output)."""

    cannot_run = False

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail or message


class Unavailable(CellError):
    """Something a cell needs cannot be had here (a QEMU binary or capability, packages, a firmware)."""

    cannot_run = True


class CellBroken(CellError):
    """Something a cell needs is broken: an image that could not be built, a user's file that cannot
    be had."""


@contextmanager
def cell_errors(cell: Cell) -> Iterator[None]:
    """Whatever provisioning raises for `cell`, as a CellError naming it."""
    try:
        yield
    except BuildError as error:
        raise CellBroken(f"{cell.id}: an image could not be built: {' '.join(str(error).split())[:600]}",
                         str(error)) from error
    except ArtifactError as error:
        raise CellBroken(str(error).splitlines()[0], str(error)) from error
    except CannotWrite as error:  # a full disk, a read-only cache: the host's state, said in one line
        raise Unavailable(f"{cell.id}: {error}") from error


def _gone(value: object, depth: int = 0) -> bool:
    """Whether a built value names a file or folder that no longer exists (its Path fields, one or two
    dataclasses deep)."""
    if isinstance(value, Path):
        return not value.exists()
    if depth < 2 and dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_gone(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value))
    return False


class Provisioner:
    def __init__(self, store: Store | None = None, locked: bool | None = None):
        """`locked`: a locked package that is gone from the mirror is an error (LockDrift), instead of
        re-resolving its set; None reads BOOTMATRIX_LOCKED."""
        self.store = store or Store()
        self.locked = locked
        self._built: dict[Hashable, Any] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _once(self, key: Hashable, cannot: str, build: Callable[[], T]) -> T:
        """`build()` once per process for `key` (threads of one `bootmatrix run -j` wait for the first);
        a failure the host is to blame for is Unavailable, "<cannot>: <why>"."""
        with self._locks_lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._built and _gone(self._built[key]):
                # Its files were removed under us (`cache prune` during a run, a shared CI cache):
                # build it again rather than hand out paths that are not there.
                log.warning("%s: its files are gone from the cache; building it again", key)
                del self._built[key]
            if key not in self._built:
                try:
                    self._built[key] = build()
                except CANNOT_RUN_HERE as error:
                    raise Unavailable(f"{cannot}: {error}") from error
            value: T = self._built[key]
            return value

    def fetcher(self, suite: str = DEFAULT_FIRMWARE_SET) -> DebianFetcher:
        def load() -> DebianFetcher:
            try:
                return DebianFetcher(self.store.root, Lockfile.load(lock_path(suite)), locked=self.locked)
            except LockError as error:
                raise Unavailable(str(error)) from error

        return self._once(("fetcher", suite), f"the {suite} lock", load)

    def qemu(self, which: str) -> QemuInstall:
        if which == "host":
            return QemuInstall.host()
        return self._once(("qemu", which), "pinned QEMU could not be fetched",
                          lambda: QemuInstall.from_prefix("pinned", pinned_qemu_prefix(self.store, self.fetcher())))

    def image(self, arch: str) -> MinimalImage:
        """Our minimal image of `arch` (kernel and busybox initramfs)."""
        return self._once(("minimal", arch), f"{arch} kernel/busybox packages could not be fetched",
                          lambda: build_minimal(self.store, self.fetcher(), arch))

    def gosource(self) -> GoSourceImage:
        """The mostly-source image (Go root, programs, first stages, stick)."""
        return self._once("gosource", "the mostly-source image could not be built", self._build_gosource)

    def _build_gosource(self) -> GoSourceImage:
        fetcher = self.fetcher()
        # One thread beside the main one: the first stages are built while the Go root is, the programs
        # while the plans are (measured from a warm package cache, 92 s with one thread beside, 102 s with
        # three: the Go root's compiles keep the cores busy already).
        with ThreadPoolExecutor(max_workers=1) as pool:
            stage1_jobs = {arch: pool.submit(build_stage1, self.store, fetcher, arch) for arch in NAMES}
            go_root = build_go_root(self.store, fetcher)
            programs_job = pool.submit(build_programs, self.store, go_root)
            plans = build_plans(self.store, go_root)
            programs = programs_job.result()
            stage1 = {arch: job.result() for arch, job in stage1_jobs.items()}
        return build_gosource_image(self.store, fetcher, go_root=go_root, programs=programs, plans=plans,
                                    stage1=stage1)

    def tinyboot(self, arch: str) -> TinybootIso:
        """The tinyboot ISO of `arch` (the example Go app as PID 1)."""
        cannot = "the tinyboot ISO could not be built"
        app = self._once("tinyapp", cannot, lambda: build_app(self.store, build_go_root(self.store, self.fetcher())))
        return self._once(("tinyboot", arch), cannot,
                          lambda: build_tinyboot_iso(self.store, self.fetcher(), arch, app))

    def ab_agent(self, arch: str) -> Path:
        """The A/B image's update agent for `arch`."""
        return self._once(("ab-agent", arch), "the A/B update agent could not be built",
                          lambda: build_agent(self.store, build_go_root(self.store, self.fetcher()), arch))

    def ab_image(self, arch: str) -> AbImage:
        """The A/B disk of `arch`: version 1 in slot a (images/recipes/ab.py)."""
        return self._once(("ab-image", arch), "the A/B image could not be built",
                          lambda: build_ab_image(self.store, self.fetcher(), arch, self.ab_agent(arch)))

    def ab_slot(self, arch: str, version: str, healthy: bool = True) -> Slot:
        """An update's slot image of `version` for `arch`."""
        return self._once(("ab-slot", arch, version, healthy), "an A/B slot image could not be built",
                          lambda: build_slot(self.store, self.fetcher(), arch, self.ab_agent(arch), version,
                                             healthy=healthy))

    def run_guest(self, job: GuestJob) -> str:
        """A build step that needs a VM of the target arch (the Lab boots one: matrix/build_vm.py)."""
        raise Unavailable(f"{job.name} needs a VM, and only a Lab boots one")

    def debian_root(self, arch: str) -> DebianRoot:
        """The Debian 13 root of `arch` (images/recipes/debian.py): dpkg and every maintainer script run
        in a VM of `arch` (run_guest)."""
        return self._once(("debian-root", arch), "the Debian root could not be built",
                          lambda: build_debian_root(self.store, self.fetcher(), arch, self.run_guest))

    def debian_disk(self, arch: str) -> DebianDisk:
        """The bootable GPT disk of the Debian root of `arch`."""
        return self._once(("debian-disk", arch), "the Debian disk could not be built",
                          lambda: build_debian_disk(self.store, self.fetcher(), self.debian_root(arch)))

    def firmware(self, suite: str) -> FirmwareSet:
        return self._once(("firmware", suite), f"firmware set {suite} could not be fetched",
                          lambda: firmware_set(self.store, self.fetcher(suite)))

    def stick(self) -> Path:
        return self._once("stick", "the boot stick could not be built",
                          lambda: build_stick(self.store, self.fetcher(), {a: self.image(a) for a in NAMES}))

    def debian_arch(self, arch: str) -> str:
        return ARCHES[arch].debian

    def own_image(self, cell: Cell) -> MinimalImage | None:
        """Our minimal image of the cell's arch when an artifact cell borrows its kernel or initramfs."""
        borrowed = [a for a in (cell.kernel, cell.initrd) if a is not None and a.image is not None]
        return self.image(cell.arch) if borrowed else None

    def artifacts(self, cell: Cell) -> dict[str, Path]:
        """The local file of each artifact of a cell: fetched, verified and stored as needed. A file
        that cannot be had is ArtifactError naming the cell, the key and the source."""
        files: dict[str, Path] = {}
        image = self.own_image(cell)
        for key, artifact in cell.artifacts().items():
            what = f"{cell.id}: {key}"
            if artifact.image is not None:
                assert image is not None
                files[key] = image.kernel if key == "kernel" else image.initrd
                continue
            fetcher = self.fetcher() if artifact.deb is not None else None
            source = ArtifactSource(
                path=Path(artifact.path) if artifact.path is not None and artifact.deb is None else None,
                url=artifact.url, sha256=artifact.sha256, size=artifact.size, deb=artifact.deb,
                member=artifact.path if artifact.deb is not None else None,
            )
            files[key] = resolve(source, what, self.store, fetcher, self.debian_arch(cell.arch))
            if key == "disk":
                checked_disk(files[key], what)
        if "efi" in files:
            files["efi"] = efi_disk(self.store, files["efi"], ARCHES[cell.arch].efi_name[1], f"{cell.id}: efi")
        return files

    def package_versions(self, cell: Cell) -> dict[str, str]:
        """name -> version of the Debian packages a cell boots with (its image kind's sets, and QEMU's
        own programs, not its library closure), as really used: the lock's, or the re-resolved ones."""
        fetcher = self.fetcher()
        sets = kind_of(cell).package_sets(self, cell)
        versions = {p.name: p.version for name in sets for p in fetcher.packages(name)}
        if cell.qemu == "pinned":
            versions |= {p.name: p.version for p in fetcher.packages(qemu_set()) if p.name.startswith("qemu-system")}
        return dict(sorted(versions.items()))

    def drift(self) -> list[Moved]:
        """Every package used instead of a locked one in this process (empty when the lock held)."""
        built = list(self._built.items())  # a copy: `run -j` threads may be adding to it
        return [m for key, fetcher in built if isinstance(key, tuple) and key[0] == "fetcher" for m in fetcher.drift]
