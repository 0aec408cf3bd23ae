"""Boot milestones from the console stream: the firmware's screen control counts as its output, a phrase
split by an escape sequence or a chunk boundary is still found, and a phase is never taken after a
later one."""

from __future__ import annotations

from harness.console import clean
from harness.timeline import Timeline
from matrix.profiles import TIMELINE_PHASES


def feed(timeline: Timeline, chunks: list[tuple[float, str]]) -> None:
    for t, raw in chunks:
        timeline.observe(clean(raw), t, raw)


def test_ovmf_setting_up_its_terminal_is_its_firmware_milestone_even_split_across_chunks() -> None:
    # What OVMF sends on a direct kernel boot, in the chunks the console read it in, then the EFI stub.
    timeline = Timeline(list(TIMELINE_PHASES))
    feed(timeline, [(2.43, "\x1b[2J"), (2.44, "\x1b[01;01H\x1b["), (2.45, "=3h\x1b[2J\x1b[01;01H"),
                    (3.45, "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path\n")])
    assert timeline.as_dict() == {"first-output": 2.43, "firmware": 2.45, "kernel": 3.45}
    assert timeline.marks["firmware"].text == "^[[=3h^[[2J^[[01;01H"  # escapes shown, from the match on


def test_a_phrase_split_by_an_escape_sequence_is_found_in_the_cleaned_text() -> None:
    timeline = Timeline([("init", r"iPXE 1\.\d+")])
    feed(timeline, [(1.0, "\x1b[0miPXE 1.\x1b[1m21.1 -- Open Source Network Boot Firmware\n")])
    assert timeline.as_dict() == {"first-output": 1.0, "init": 1.0}


def test_a_screen_clear_after_the_kernel_started_is_not_firmware() -> None:
    timeline = Timeline(list(TIMELINE_PHASES))
    feed(timeline, [(0.9, "[    0.000000] Linux version 6.12\n"), (3.0, "\x1b[=3h")])
    assert "firmware" not in timeline.as_dict()


def test_seabios_clearing_the_screen_before_its_banner_leaves_the_banner_as_its_milestone() -> None:
    timeline = Timeline(list(TIMELINE_PHASES))
    feed(timeline, [(0.09, "\x1b[2J"), (0.10, "SeaBIOS (version 1.16.3-debian-1.16.3-2)\n")])
    assert timeline.marks["firmware"].text == "SeaBIOS (version 1.16.3-debian-1.16.3-2)"
    assert timeline.as_dict() == {"first-output": 0.09, "firmware": 0.1}
