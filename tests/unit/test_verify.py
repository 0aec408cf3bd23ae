"""`bootmatrix verify` on real images: the committed manifest matches what this machine builds, and a
one-byte change in a guest script fails it, naming the image and the file. No VM: nothing boots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from images.manifest import DIFFERS, IDENTICAL, MANIFEST_DIR, RecordingStore, file_name, labelled, load_manifest
from images.recipes.minimal import INIT_SCRIPT, build_minimal
from matrix.cli import main
from matrix.lab import Lab
from matrix.verify import Built, verify


def test_one_byte_in_a_guest_script_fails_naming_the_image_and_the_file(bootmatrix_lab: Lab, tmp_path: Path) -> None:
    script = bytearray(INIT_SCRIPT.read_bytes())
    script[script.index(b"echo")] = ord("E")  # "Echo": one byte
    changed = tmp_path / "init.sh"
    changed.write_bytes(bytes(script))
    store = RecordingStore(bootmatrix_lab.store.root)  # the session's cache: its .debs are there
    fetcher = Lab(store, locked=bootmatrix_lab.locked).fetcher()
    build_minimal(store, fetcher, "x86_64", init=changed)
    build_minimal(store, fetcher, "aarch64")
    verdicts = {v.label: v for v in verify(Built(labelled(store.used.values())), store, load_manifest(), whole=False)}
    assert verdicts["minimal-aarch64"].status == IDENTICAL
    changed_image = verdicts["minimal-x86_64"]
    assert changed_image.status == DIFFERS and not changed_image.passed
    assert changed_image.details[0].startswith("input init: ")
    assert [d.split(":")[0] for d in changed_image.details[1:]] == ["initramfs.cpio"]  # the kernel is the same


def test_the_cli_exits_1_naming_the_image_and_file_whose_bytes_the_manifest_does_not_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    manifest = tmp_path / "manifest"
    shutil.copytree(MANIFEST_DIR, manifest)
    assert main(["verify", "default", "--manifest", str(manifest)]) == 0
    assert "identical" in capsys.readouterr().out
    path = manifest / file_name("minimal-riscv64")
    record = json.loads(path.read_text())
    _, size, mode = record["files"]["kernel"].split()
    record["files"]["kernel"] = f"{'0' * 64} {size} {mode}"
    record["content_sha256"] = "0" * 64
    path.write_text(json.dumps(record))
    assert main(["verify", "default", "--manifest", str(manifest)]) == 1
    shown = capsys.readouterr().out
    assert "minimal-riscv64: differs" in shown
    assert f"kernel: {size} bytes, as in the manifest; content differs" in shown
    assert "minimal-x86_64" in shown and shown.count(": differs") == 1


def test_a_missing_or_damaged_manifest_is_exit_2_before_anything_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--manifest", str(tmp_path / "none")]) == 2
    assert "no image manifest here" in capsys.readouterr().out
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "stick.json").write_text("[]")
    assert main(["verify", "--manifest", str(tmp_path / "bad")]) == 2
    assert "stick.json: not an image manifest" in capsys.readouterr().out


def test_skipped_cells_are_never_provisioned(tmp_path: Path) -> None:
    from images.manifest import RecordingStore
    from matrix.lab import Lab
    from matrix.verify import build_images

    matrix = tmp_path / "m.toml"
    matrix.write_text('[[cell]]\narch = "aarch64"\nfirmware = "aavmf"\nmedia = "disk"\nimage = "debian"\n'
                      '[[cell]]\narch = "riscv64"\nfirmware = "edk2"\nmedia = "disk"\nimage = "debian"\n')
    store = RecordingStore(tmp_path / "cache")
    built = build_images(Lab(store), [matrix], (), skip=("aarch64-*-debian", "riscv64-*-debian"))
    # Neither root was built nor fetched (a Debian root of these arches takes 7-11 minutes under TCG).
    assert built.images == {} and built.errors == {}
    assert not (tmp_path / "cache" / "debs").exists() or not any((tmp_path / "cache" / "debs").iterdir())
