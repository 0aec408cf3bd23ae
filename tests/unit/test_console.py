"""Console matching on a socket: ANSI-proof, fails at once on bad patterns, death and EOF; run() against a
real /bin/sh on the other end of the socket (no tty, so no echo: the markers are what is tested)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import harness.console as console_module
from harness.console import TRACE_GRACE, Console, clean
from harness.deadline import Deadline
from harness.errors import ConsoleTimeout, GuestGone, GuestPanic
from tests.timing import AT_ONCE


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Console, socket.socket, dict[str, str | None]]]:
    ours, theirs = socket.socketpair()
    state: dict[str, str | None] = {"dead": None}
    console = Console(ours.fileno(), tmp_path / "console.log", time.monotonic(), lambda: state["dead"])
    yield console, theirs, state
    console.close()
    ours.close()
    theirs.close()


def test_ansi_and_carriage_returns_are_cleaned() -> None:
    assert clean("\x1b[6n\x1b[1;32mgreen\x1b[0m\r\n") == "green\n"


def test_match_across_chunks_and_ansi(pair) -> None:
    console, peer, _ = pair
    peer.sendall(b"booting... BOOTMATRIX-RE")
    peer.sendall(b"\x1b[0mADY arch=x\r\n")
    found = console.expect(r"BOOTMATRIX-READY arch=(\w+)", Deadline.after(5))
    assert found.match.group(1) == "x" and found.before == "booting... "


def test_bad_pattern_fails_at_once_with_tail(pair) -> None:
    console, peer, _ = pair
    peer.sendall(b"[ 1.0] something\r\n[ 1.1] Kernel panic - not syncing: VFS: Unable to mount root\r\n")
    started = time.monotonic()
    deadline = Deadline.after(30)
    with pytest.raises(GuestPanic, match="Kernel panic - not syncing: VFS") as caught:
        console.expect("never", deadline)
    # It reads on for the backtrace (no end marker comes), then fails long before the deadline.
    assert TRACE_GRACE <= time.monotonic() - started < deadline.budget * AT_ONCE
    assert "something" in caught.value.tail


def test_a_bad_pattern_keeps_the_backtrace_that_follows(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    console, peer, _ = pair
    monkeypatch.setattr(console_module, "TRACE_GRACE", 40.0)  # so only the end marker can end the wait soon
    peer.sendall(b"Oops: double fault: 0000 [#1] PREEMPT SMP NOPTI\nRIP: 0010:clear_page_erms+0x7/0x10\n")
    threading.Timer(0.2, peer.sendall, [b"Call Trace:\n ? die+0x36\n---[ end trace 0000000000000000 ]---\n"]).start()
    started = time.monotonic()
    with pytest.raises(GuestPanic, match="kernel Oops on the console: Oops: double fault") as caught:
        console.expect("never", Deadline.after(30))
    assert time.monotonic() - started < 40.0 * AT_ONCE  # the end marker ended the wait, not the grace
    assert "RIP: 0010:clear_page_erms" in caught.value.tail and "end trace" in caught.value.tail


def test_wanted_text_before_a_bad_pattern_still_matches(pair) -> None:
    console, peer, _ = pair
    peer.sendall(b"ready\nKernel panic - not syncing: later\n")
    assert console.expect("ready", Deadline.after(5)).text == "ready"
    with pytest.raises(GuestPanic):
        console.expect("more", Deadline.after(5))


def test_allow_relaxes_a_bad_pattern(pair) -> None:
    console, peer, _ = pair
    peer.sendall(b"Kernel panic - not syncing: expected\nafter\n")
    with console.allow("kernel panic"):
        assert console.expect("after", Deadline.after(5)).text == "after"
    assert "kernel panic" in console.bad_patterns


def test_dead_guest_fails_at_once(pair) -> None:
    console, _, state = pair
    state["dead"] = "QEMU killed by SIGKILL"
    started = time.monotonic()
    with pytest.raises(GuestGone, match="SIGKILL"):
        console.expect("never", Deadline.after(30))
    assert time.monotonic() - started < 30 * AT_ONCE


def test_end_of_file_fails_at_once(pair) -> None:
    console, peer, _ = pair
    peer.sendall(b"last words\n")
    peer.close()
    with pytest.raises(GuestGone, match="console closed") as caught:
        console.expect("never", Deadline.after(30))
    assert "last words" in caught.value.tail


def test_hang_is_a_timeout_naming_what_was_awaited(pair) -> None:
    console, peer, _ = pair
    peer.sendall(b"stuck here\n")
    with pytest.raises(ConsoleTimeout, match="waiting for the prompt") as caught:
        console.expect("never", Deadline.after(0.5), what="the prompt")
    assert "stuck here" in caught.value.tail


def test_transcript_is_timestamped(pair, tmp_path: Path) -> None:
    console, peer, _ = pair
    peer.sendall(b"line one\r\nline two\r\n")
    console.expect("line two", Deadline.after(5))
    lines = (tmp_path / "console.log").read_text().splitlines()
    assert lines[0].endswith("] line one") and lines[0].startswith("[")


def test_run_against_a_real_shell(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()
    shell = subprocess.Popen(["/bin/sh"], stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.STDOUT)
    theirs.close()
    console = Console(ours.fileno(), tmp_path / "c.log", time.monotonic(), lambda: None)
    console.line_ending = "\n"  # a shell on a plain socket, no tty to turn \r into \n
    try:
        assert console.run("echo $((6*7))", Deadline.after(10)) == ("42", 0)
        assert console.run("false", Deadline.after(10)) == ("", 1)
        assert console.run("printf abc", Deadline.after(10)) == ("abc", 0)
        assert console.run("printf 'a\\nb\\n'; exit_code() { return 3; }; exit_code", Deadline.after(10)) == ("a\nb", 3)
    finally:
        shell.kill()
        shell.wait()
        console.close()
        ours.close()


def test_the_harness_knows_no_image_strings() -> None:
    """An image's own failure words come from the image (Machine(bad_patterns=...)), not the harness."""
    from harness.console import DEFAULT_BAD_PATTERNS

    assert not any("bootmatrix" in pattern.lower() for pattern in DEFAULT_BAD_PATTERNS.values())
    assert "root not found" not in DEFAULT_BAD_PATTERNS


def test_a_lease_is_read_back_from_the_kernel_view() -> None:
    from harness.guestnet import parse_lease

    readback = ("2: eth0    inet 10.0.2.15/24 brd 10.0.2.255 scope global eth0\\       valid_lft forever\n#\n"
                "default via 10.0.2.2 dev eth0\n#\nnameserver 10.0.2.3\nnameserver 10.0.2.4\n")
    lease = parse_lease("eth0", readback, 0.5)
    assert lease is not None
    assert (lease.address, lease.prefix, lease.gateway, lease.dns) == ("10.0.2.15", 24, "10.0.2.2", "10.0.2.3")
    restricted = parse_lease("eth0", "2: eth0    inet 10.0.2.15/24 scope global eth0\n#\n#\n", 0.5)
    assert restricted is not None and (restricted.gateway, restricted.dns) == ("", "")
    assert parse_lease("eth0", "#\n#\n", 0.5) is None
    # Debian 13's ip colours the address on a terminal (the Debian image's console), as seen in a run.
    coloured = ("2: eth0    inet \x1b[35m10.0.2.15\x1b[0m/24 metric 1024 brd \x1b[35m10.0.2.255 \x1b[0mscope global "
                "dynamic eth0\n#\ndefault via \x1b[35m10.0.2.2 \x1b[0mdev \x1b[36meth0 \x1b[0mproto dhcp\n#\n")
    lease = parse_lease("eth0", coloured, 0.5)
    assert lease is not None and (lease.address, lease.prefix, lease.gateway) == ("10.0.2.15", 24, "10.0.2.2")


def test_a_secret_never_reaches_the_transcript_even_split_between_reads(tmp_path: Path) -> None:
    from harness.console import Transcript

    log = tmp_path / "console.log"
    transcript = Transcript(log, 0.0)
    transcript.secrets.append("s3cret")
    transcript.write("Password: s3")
    transcript.write("cret\nok\n")
    transcript.note("typed s3cret")
    transcript.close()
    text = log.read_text()
    assert "s3cret" not in text and text.count("<secret>") == 2 and "ok" in text


def test_a_flooding_console_keeps_its_head_and_tail_and_says_what_was_cut(tmp_path: Path) -> None:
    from harness.console import Transcript

    log = tmp_path / "console.log"
    transcript = Transcript(log, 0.0, head_bytes=10_000, tail_bytes=5_000)
    for number in range(100_000):
        transcript.write(f"line {number}\n")
    transcript.close()
    text = log.read_text()
    assert log.stat().st_size < 16_000
    assert "line 0\n" in text and "line 99999\n" in text and "line 50000\n" not in text
    cut = [line for line in text.splitlines() if "### console.log cut here" in line]
    assert len(cut) == 1 and "bytes" in cut[0]
