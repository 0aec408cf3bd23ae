"""The report files a run writes: the timeline picture's labels fit it; junit.xml says what failed."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from matrix.report import CHAR_WIDTH, junit_xml, timeline_svg

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("milestones", [
    {"first_output": 0.1, "firmware": 0.12, "bootloader": 1.9, "kernel": 2.4, "init": 4.5, "ready": 4.62},
    {"kernel": 0.5, "ready": 123.45},
    {"ready": 0.01},
])
def test_every_label_of_the_timeline_fits_inside_the_picture(milestones: dict[str, float]) -> None:
    """docs/timeline-x86_64-ovmf-stick.svg, rendered, cut its last labels ("4.6..."): each text's right
    end, at a generous width per character, must be inside the width."""
    root = ET.fromstring(timeline_svg("x86_64-ovmf-stick", milestones))
    width = float(root.attrib["width"])
    texts = root.findall(f"{SVG}text")
    labels = [t for t in texts if (t.text or "").endswith(" s") and t.text != texts[0].text]
    assert len(labels) == len(milestones)
    for text in texts:
        right_end = float(text.attrib["x"]) + CHAR_WIDTH * len(text.text or "")
        assert right_end <= width, f"{text.text!r} ends at {right_end:.0f} px of {width:.0f}"


def test_junit_marks_interrupted_cells_as_errors_and_carries_the_console_tail() -> None:
    rows: list[dict[str, object]] = [
        {"cell": "a", "result": "fail", "reason": "no match", "console_tail": "Low memory mode"},
        {"cell": "b", "result": "interrupted", "reason": "the run was interrupted (SIGTERM)"},
        {"cell": "c", "result": "pass", "reason": ""},
    ]
    suite = ET.fromstring(junit_xml("run", rows))
    assert (suite.attrib["failures"], suite.attrib["errors"]) == ("1", "1")
    failed, interrupted, passed = suite.findall("testcase")
    assert failed.findtext("system-out") == "Low memory mode"
    assert "last console lines:\nLow memory mode" in (failed.findtext("failure") or "")
    assert interrupted.find("error") is not None and passed.find("failure") is None
