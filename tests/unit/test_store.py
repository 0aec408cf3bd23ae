"""The content-addressed store: one build under contention, verification on use, rebuild on corruption."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from images.store import Store, code_sha256, tree_sha256


def _build_payload(counter: Path) -> Callable[[Path], None]:
    def build(content: Path) -> None:
        with counter.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # widen the race window
        (content / "payload.bin").write_bytes(os.urandom(64 * 1024))
        (content / "sub").mkdir()
        (content / "sub" / "note").write_text("built once")

    return build


def _contender(root: str, counter: str, start_at: float, out: str) -> None:
    store = Store(Path(root))
    while time.time() < start_at:
        time.sleep(0.001)
    content = store.get("race", {"v": 1}, _build_payload(Path(counter)))
    Path(out).write_bytes((content / "payload.bin").read_bytes())


def test_four_processes_racing_build_once_and_get_the_same_bytes(tmp_path: Path) -> None:
    counter = tmp_path / "builds.log"
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0
    outs = [tmp_path / f"out{i}" for i in range(4)]
    procs = [
        context.Process(target=_contender, args=(str(tmp_path / "cache"), str(counter), start_at, str(out)))
        for out in outs
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert len(counter.read_text().splitlines()) == 1
    payloads = {out.read_bytes() for out in outs}
    assert len(payloads) == 1 and len(next(iter(payloads))) == 64 * 1024


def test_corrupted_entry_is_rebuilt_not_used(tmp_path: Path) -> None:
    counter = tmp_path / "builds.log"
    build = _build_payload(counter)
    store = Store(tmp_path / "cache")
    content = store.get("thing", {"v": 1}, build)
    original = (content / "payload.bin").read_bytes()
    (content / "payload.bin").write_bytes(b"tampered")
    fresh_process_view = Store(tmp_path / "cache")  # verification is remembered per process
    content = fresh_process_view.get("thing", {"v": 1}, build)
    assert (content / "payload.bin").read_bytes() not in (b"tampered", original)  # rebuilt with new random bytes
    assert len(counter.read_text().splitlines()) == 2
    manifest = fresh_process_view.entries()[0].manifest()
    assert manifest["content_sha256"] == tree_sha256(content)


def test_added_file_also_fails_verification(tmp_path: Path) -> None:
    counter = tmp_path / "builds.log"
    store = Store(tmp_path / "cache")
    content = store.get("thing", {"v": 1}, _build_payload(counter))
    (content / "intruder").write_text("x")
    Store(tmp_path / "cache").get("thing", {"v": 1}, _build_payload(counter))
    assert len(counter.read_text().splitlines()) == 2


def test_different_inputs_are_different_entries(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    a = store.get("x", {"v": 1}, lambda c: (c / "f").write_text("1"))
    b = store.get("x", {"v": 2}, lambda c: (c / "f").write_text("2"))
    assert a != b and (a / "f").read_text() == "1" and (b / "f").read_text() == "2"


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")

    def broken(content: Path) -> None:
        (content / "half").write_text("x")
        raise RuntimeError("recipe failed")

    with pytest.raises(RuntimeError, match="recipe failed"):
        store.get("x", {"v": 1}, broken)
    assert store.entries() == []
    assert list((store.root / "tmp").iterdir()) == []


def test_prune_removes_unused_entries(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    store.get("old", {"v": 1}, lambda c: (c / "f").write_text("1"))
    store.get("new", {"v": 1}, lambda c: (c / "f").write_text("2"))
    old = next(e for e in store.entries() if e.manifest()["name"] == "old")
    long_ago = time.time() - 90 * 86400
    os.utime(old.root / "last-used", (long_ago, long_ago))
    removed = store.prune(older_than_days=30)
    assert [e.key for e in removed] == [old.key]
    assert [e.manifest()["name"] for e in store.entries()] == ["new"]


def test_an_unchanged_entry_is_not_hashed_again_and_a_changed_one_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stamp spares a warm process from reading the tree; a write, even one that puts the old size
    and mtime back, changes the ctime, so the tree is hashed again and the entry rebuilt."""
    import images.store as store_module

    counter = tmp_path / "builds.log"
    content = Store(tmp_path / "cache").get("thing", {"v": 1}, _build_payload(counter))
    real = store_module.tree_sha256

    def no_hashing(root: Path) -> str:
        raise AssertionError(f"{root} was hashed again")

    monkeypatch.setattr(store_module, "tree_sha256", no_hashing)
    assert Store(tmp_path / "cache").get("thing", {"v": 1}, _build_payload(counter)) == content
    monkeypatch.setattr(store_module, "tree_sha256", real)

    payload = content / "payload.bin"
    before = payload.stat()
    payload.write_bytes(bytes(b ^ 0xFF for b in payload.read_bytes()))  # same size
    os.utime(payload, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime
    Store(tmp_path / "cache").get("thing", {"v": 1}, _build_payload(counter))
    assert len(counter.read_text().splitlines()) == 2  # rebuilt, never used


KILLED_BUILD = """
import sys, time
from pathlib import Path
from images.store import Store, scratch_dir

def build(content):
    with scratch_dir("stick") as tmp:
        (Path(tmp) / "half.img").write_bytes(b"x" * 1_000_000)
        print(tmp, flush=True)
        time.sleep(60)

Store(Path(sys.argv[1])).get("slow", {}, build)
"""


def test_a_killed_build_leaves_nothing_outside_the_cache_and_the_next_store_cleans_it(tmp_path: Path) -> None:
    """SIGKILL in the middle of a build: its scratch folder is inside the cache's tmp/ (not the
    system's /tmp, where nothing would clean it), and the next Store of that cache removes it."""
    import subprocess
    import sys

    root = tmp_path / "cache"
    process = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(root)], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).parents[2])
    assert process.stdout is not None
    scratch = Path(process.stdout.readline().strip())
    process.kill()
    process.wait()
    assert scratch.is_relative_to(root / "tmp") and scratch.exists()
    Store(root)
    assert list((root / "tmp").iterdir()) == []
    assert list((root / "entries").iterdir()) == []


@pytest.mark.parametrize("manifest", ["[1, 2]", "{\"name\": 3}", "not json"])
def test_a_manifest_of_the_wrong_shape_is_rebuilt(tmp_path: Path, manifest: str) -> None:
    store = Store(tmp_path)
    built: list[int] = []

    def build(content: Path) -> None:
        built.append(1)
        (content / "f").write_text("data")

    folder = store.get("x", {}, build)
    (folder.parent / "manifest.json").write_text(manifest)
    assert (store.get("x", {}, build) / "f").read_text() == "data"
    assert len(built) == 2


def _pruner(root: str, start_at: float, out: str) -> None:
    while time.time() < start_at:
        time.sleep(0.001)
    try:
        Store(Path(root)).prune(None)
        Path(out).write_text("ok")
    except Exception as error:  # noqa: BLE001 - the test reports it
        Path(out).write_text(f"{type(error).__name__}: {error}")


def test_two_prunes_at_once_both_succeed(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    for number in range(30):
        store.get("x", {"n": number}, lambda content: (content / "f").write_text("data"))
    start_at = time.time() + 0.5
    context = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"out{n}" for n in range(2)]
    workers = [context.Process(target=_pruner, args=(str(tmp_path / "cache"), start_at, str(out))) for out in outs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [out.read_text() for out in outs] == ["ok", "ok"]
    assert store.entries() == []


def test_the_lab_builds_again_what_a_prune_removed_during_a_run(tmp_path: Path) -> None:
    """`cache prune --all` while a run goes on: the next cell gets its image built again, not a path
    that is gone (it used to be "unavailable")."""
    from dataclasses import dataclass

    from matrix.provision import Provisioner

    @dataclass(frozen=True)
    class Built:
        kernel: Path

    store = Store(tmp_path / "cache")
    lab = Provisioner(store)
    calls: list[Path] = []

    def build() -> Built:
        folder = store.get("img", {}, lambda content: (content / "kernel").write_text("k"))
        calls.append(folder)
        return Built(folder / "kernel")

    first = lab._once(("image",), "x", build)
    assert lab._once(("image",), "x", build) == first and len(calls) == 1
    store.prune(None)
    again = lab._once(("image",), "x", build)
    assert again.kernel.exists() and len(calls) == 2


def _prune_often(root: str, rounds: int, out: str) -> None:
    try:
        for _ in range(rounds):
            Store(Path(root)).prune(None)
        Path(out).write_text("ok")
    except Exception as error:  # noqa: BLE001 - the test reports it
        Path(out).write_text(f"{type(error).__name__}: {error}")


def test_readers_never_fail_while_another_process_prunes_everything(tmp_path: Path) -> None:
    """A shared CI cache: one process prunes all entries again and again while another gets them (and
    rebuilds what was pruned). No get raises, and what a get returned has the right bytes whenever it
    is read. Between a get returning and the read, the pruner may remove the entry (no lock is held
    then): that read finds nothing, a gap the store does not close (the lab rebuilds on its next use)."""
    root = tmp_path / "cache"
    store = Store(root)
    out = tmp_path / "pruner"
    pruner = multiprocessing.get_context("spawn").Process(target=_prune_often, args=(str(root), 200, str(out)))
    pruner.start()
    gets = pruned_after_get = 0
    while pruner.is_alive() or gets < 50:
        number = gets % 5

        def build(content: Path, n: int = number) -> None:
            (content / "f").write_text(f"data {n}")

        folder = store.get("x", {"n": number}, build)
        try:
            assert (folder / "f").read_text() == f"data {number}"
        except FileNotFoundError:
            pruned_after_get += 1
        gets += 1
        if gets > 5000:
            break
    pruner.join(60)
    assert out.read_text() == "ok"
    assert gets >= 50 and pruned_after_get < gets


def test_a_change_to_a_shared_writer_changes_the_inputs_of_what_calls_it(tmp_path: Path, monkeypatch) -> None:
    """The A/B and Debian disks put code_sha256(esp, fat, gpt, stick) in their inputs: an edit of any of
    those modules (here a copy of one, edited) must give another key, and the same code the same key."""
    import importlib.util
    import sys

    from images.recipes import esp, gpt

    source = tmp_path / "writer.py"
    source.write_text(Path(esp.__file__ or "").read_text())
    spec = importlib.util.spec_from_file_location("writer", source)
    assert spec is not None and spec.loader is not None
    writer = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "writer", writer)
    spec.loader.exec_module(writer)
    before = code_sha256(writer, gpt)
    assert before == code_sha256(writer, gpt) != code_sha256(writer)
    source.write_text(source.read_text() + "# a comment is a change too\n")
    assert code_sha256(writer, gpt) != before
