"""A user's own artifacts (a kernel they built, a vendor ISO, a disk, an EFI application, a firmware
build): where each comes from, fetched and verified into the store, as a local path QEMU can open.

Three sources, after QEMU's functional-test assets and the project's own Debian lock:
- a local path: used where it is (checked to exist; a disk is opened through a per-VM overlay, so the
  file is never written);
- `url` + `sha256`: downloaded once into the store, keyed by the sha256; bytes that do not hash to it
  are refused and nothing is stored;
- `deb` + `path`: one file of a Debian package, fetched through the lock (`bootmatrix lock --add NAME`
  puts a package in it) and extracted into the store.

The images layer knows nothing of matrix files: `ArtifactSource` is plain data, and `what` (the key the
user wrote, say "cell[2].kernel") only names the artifact in errors.
"""

from __future__ import annotations

import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from images.debian.download import DownloadError, Wanted, download, pool
from images.debian.extract import extract_deb
from images.debian.fetch import DebianFetcher, FetchError
from images.debian.lock import LockedPackage, LockError, parse_package_spec
from images.store import Store, file_sha256, scratch_dir
from images.tools import BuildError, run_tool

RECIPE_VERSION = 1
FAT_EPOCH = 946684800  # 2000-01-01 00:00 UTC: the time of every file written into a FAT image here
QCOW2_MAGIC = b"QFI\xfb"


class ArtifactError(Exception):
    """An artifact cannot be had: the message names the key, the source and why (before QEMU starts)."""


@dataclass(frozen=True)
class ArtifactSource:
    path: Path | None = None  # a local file (absolute, or relative to the process's folder)
    url: str | None = None
    sha256: str | None = None
    size: int | None = None  # with url: bytes, when known (the download stops there)
    deb: str | None = None  # "name", "name:arch", "name=version" or "name:arch=version"
    member: str | None = None  # the file inside the package (with deb)

    def describe(self) -> str:
        if self.path is not None:
            return str(self.path)
        if self.url is not None:
            return f"{self.url} (sha256 {self.sha256})"
        return f"{self.member} from the Debian package {self.deb}"


def disk_format(path: Path) -> str:
    """QEMU's format name for a disk image: qcow2 by its magic, raw otherwise (never probed by QEMU,
    which would let a raw image that starts with a qcow2 header be read as one)."""
    with path.open("rb") as handle:
        return "qcow2" if handle.read(4) == QCOW2_MAGIC else "raw"


# qcow2 header (docs/interop/qcow2.txt): big-endian; bytes 8-15 backing_file_offset, 16-19 its size,
# 72-79 (version 3) incompatible_features, whose bit 2 says the guest's data lives in an external file.
QCOW2_EXTERNAL_DATA = 1 << 2


def host_files_named_by(path: Path) -> str | None:
    """What a user's qcow2 disk would make QEMU open besides itself (a backing file, an external data
    file), or None. Such a disk lets whoever wrote it read any host file QEMU can: its guest sees the
    named file's bytes. A raw disk names nothing."""
    with path.open("rb") as handle:
        header = handle.read(80)
    if header[:4] != QCOW2_MAGIC or len(header) < 20:
        return None
    version = int.from_bytes(header[4:8], "big")
    backing_offset = int.from_bytes(header[8:16], "big")
    if backing_offset:
        size = int.from_bytes(header[16:20], "big")
        with path.open("rb") as handle:
            handle.seek(backing_offset)
            name = handle.read(min(size, 1023)).decode(errors="replace")
        return f"the backing file {name!r}"
    if version >= 3 and len(header) >= 80 and int.from_bytes(header[72:80], "big") & QCOW2_EXTERNAL_DATA:
        return "an external data file"
    return None


def checked_disk(path: Path, what: str) -> Path:
    """A user's disk image, refused when it is a qcow2 that names another host file: a disk must be
    self-contained (`qemu-img convert -O qcow2 in.qcow2 out.qcow2` makes one from a chain)."""
    named = host_files_named_by(path)
    if named is not None:
        raise ArtifactError(f"{what}: {path} is a qcow2 image naming {named}; a disk must be self-contained "
                            "(refused: it would make QEMU open a host file; flatten it with "
                            "`qemu-img convert -O qcow2 IN OUT`)")
    return path


def resolve(source: ArtifactSource, what: str, store: Store, fetcher: DebianFetcher | None,
            debian_arch: str | None = None) -> Path:
    """The artifact as a local file (ArtifactError when it cannot be had, naming `what`)."""
    if source.path is not None:
        return local(source.path, what)
    if source.url is not None:
        return from_url(store, source.url, source.sha256 or "", what, source.size)
    if source.deb is not None:
        if fetcher is None:
            raise ArtifactError(f"{what}: {source.describe()}: no Debian lock is available here")
        return from_deb(store, fetcher, source.deb, source.member or "", what, debian_arch=debian_arch)
    raise ArtifactError(f"{what}: names no source (give a path, url + sha256, or deb + path)")


def local(path: Path, what: str) -> Path:
    if not path.exists():
        raise ArtifactError(f"{what}: {path} does not exist")
    if not path.is_file():
        raise ArtifactError(f"{what}: {path} is not a file")
    return path.resolve()


def _file_name(url: str) -> str:
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name
    return name if name and name not in (".", "..") else "artifact"


def from_url(store: Store, url: str, sha256: str, what: str, size: int | None = None) -> Path:
    """Download `url` once into the store, keyed by its sha256; a mismatch is refused and not stored."""
    name = _file_name(url)

    def build(content: Path) -> None:
        with scratch_dir("artifact") as scratch:
            target = Path(scratch) / name
            try:
                download(pool(), Wanted(url, target, size, sha256.lower()))
            except DownloadError as error:
                raise BuildError(f"{what}: {error}", "download", str(error)) from error
            shutil.move(target, content / name)

    (store.root / "tmp").mkdir(parents=True, exist_ok=True)
    try:
        folder = store.get("url-artifact", {"sha256": sha256.lower(), "name": name}, build)
    except BuildError as error:
        raise ArtifactError(str(error).removeprefix("building url-artifact: ")) from None
    return folder / name


def artifact_set(name: str, arch: str) -> str:
    """The lock's set for one package added by `bootmatrix lock --add` (one set each: fetching one
    artifact downloads only its package, and drift is handled per package like any set)."""
    return f"artifact-{name}-{arch}"


def find_locked(fetcher: DebianFetcher, spec: str, debian_arch: str | None) -> tuple[str, LockedPackage]:
    """The lock's set and entry for `spec`, preferring the guest's Debian arch, then `all`."""
    name, arch, version = parse_package_spec(spec)
    found: list[tuple[str, LockedPackage]] = []
    for set_name in sorted(fetcher.lock.sets):
        for package in fetcher.packages(set_name):
            if package.name == name and (arch is None or package.arch == arch):
                found.append((set_name, package))
    if not found:
        hint = f"{name}:{arch}" if arch else name
        raise LockError(
            f"the Debian package {name!r} is not in {fetcher.lock.path.name}: add it with "
            f"`bootmatrix lock --add {hint}` (and commit the lock file)")
    if version is not None and all(p.version != version for _, p in found):
        have = ", ".join(sorted({p.version for _, p in found}))
        raise LockError(
            f"{fetcher.lock.path.name} has {name} {have}, not {version}: `bootmatrix lock --add {name}={version}` "
            "locks that version")
    matching = [(s, p) for s, p in found if version is None or p.version == version]
    for preferred in (debian_arch, "all"):
        for set_name, package in matching:
            if package.arch == preferred:
                return set_name, package
    return matching[0]


def from_deb(store: Store, fetcher: DebianFetcher, spec: str, member: str, what: str, *,
             debian_arch: str | None = None) -> Path:
    """One file of a locked Debian package, extracted into the store (keyed by the package's sha256)."""
    if not member:
        raise ArtifactError(f"{what}: deb = {spec!r} needs `path`, the file inside the package")
    wanted = PurePosixPath(member.lstrip("/"))
    try:
        set_name, package = find_locked(fetcher, spec, debian_arch)
        inputs = {"recipe": RECIPE_VERSION, "sha256": package.sha256, "member": str(wanted)}
        found = store.find("deb-artifact", inputs)
        if found is not None:
            return found / wanted.name
        fetched = fetcher.fetch_set(set_name)
    except (LockError, FetchError) as error:
        raise ArtifactError(f"{what}: {error}") from None
    # The lock's own file, or, when the set was re-resolved (the locked file is gone), its name's.
    locked = [(p, path) for p, path in fetched if p.sha256 == package.sha256]
    package, deb = (locked or [(p, path) for p, path in fetched if p.name == package.name])[0]
    inputs["sha256"] = package.sha256

    def build(content: Path) -> None:
        with scratch_dir("artifact") as scratch:
            written = extract_deb(deb, Path(scratch), lambda path: PurePosixPath(path) == wanted)
            source = Path(scratch) / wanted
            if not written or not source.exists():
                listing = run_tool(["dpkg-deb", "--contents", str(deb)], f"listing {deb.name}").stdout
                files = [line.split()[-1].removeprefix("./") for line in listing.splitlines()
                         if not line.startswith("d")]
                raise BuildError(f"{what}: {package.name} {package.version} has no file {wanted} "
                                 f"(it has: {', '.join(files[:20])}{' ...' if len(files) > 20 else ''})")
            shutil.copyfile(source.resolve(), content / wanted.name)  # resolve: a symlink in the package

    (store.root / "tmp").mkdir(parents=True, exist_ok=True)
    try:
        folder = store.get("deb-artifact", inputs, build)
    except BuildError as error:
        raise ArtifactError(str(error).removeprefix("building deb-artifact: ")) from None
    return folder / wanted.name


def write_efi_fat(disk: Path, size_mib: int, application: Path, removable_name: str, what: str) -> None:
    """A FAT file system of `size_mib` whose only file is EFI/BOOT/<removable_name>: what a firmware's
    removable-media boot starts. A fixed volume id and no timestamps from the clock: the same application
    gives the same bytes."""
    with disk.open("wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    run_tool(["mkfs.vfat", "-i", "B007E511", "-n", "BOOTMATRIX", "--invariant", str(disk)],
             f"{what}: formatting the EFI disk")
    # No mcopy -m: every entry gets SOURCE_DATE_EPOCH's time (2000-01-01; FAT starts in 1980), not the
    # host file's, which differs between two builds.
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin", "SOURCE_DATE_EPOCH": str(FAT_EPOCH), "TZ": "UTC"}
    run_tool(["mmd", "-i", str(disk), "::/EFI", "::/EFI/BOOT"], f"{what}: making EFI/BOOT", env=env)
    run_tool(["mcopy", "-i", str(disk), str(application), f"::/EFI/BOOT/{removable_name}"],
             f"{what}: copying the EFI application", env=env)


def efi_disk(store: Store, application: Path, removable_name: str, what: str) -> Path:
    """A small FAT disk whose EFI/BOOT/<removable_name> is `application`: the firmware's removable-media
    boot starts it with no boot loader and no boot entry (UEFI spec 3.5.1.1). Keyed by the file's bytes."""
    size_mib = max(8, application.stat().st_size // (1024 * 1024) * 2 + 4)

    def build(content: Path) -> None:
        write_efi_fat(content / "esp.img", size_mib, application, removable_name, what)

    inputs = {"recipe": RECIPE_VERSION, "fat": 2, "sha256": file_sha256(application), "name": removable_name,
              "mib": size_mib}
    try:
        return store.get("efi-disk", inputs, build) / "esp.img"
    except BuildError as error:
        raise ArtifactError(str(error).removeprefix("building efi-disk: ")) from None
