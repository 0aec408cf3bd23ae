"""Things a person reads: the boot timeline as an SVG chart, JUnit XML for CLI runs, allure attachments
for pytest runs, and trend plots of the metric history.
"""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

from matrix.history import Row

PHASE_COLOURS = ["#8da0cb", "#66c2a5", "#fc8d62", "#e78ac3", "#a6d854", "#ffd92f"]


CHAR_WIDTH = 7.2  # px: a generous width of one character of 12 px sans-serif (0.6 em)


def timeline_svg(title: str, milestones: dict[str, float], width: int = 720) -> str:
    """A horizontal bar per phase (from one milestone to the next), with seconds on an axis."""
    ordered = sorted(milestones.items(), key=lambda item: item[1])
    total = max((t for _, t in ordered), default=0.0) or 1.0
    # `right` leaves room after the longest bar for its label ("123.45 s", 8 characters at most of about
    # CHAR_WIDTH each), so no label runs off the picture (tests/unit/test_report_files.py measures them).
    left, bar, gap = 150, 22, 8
    right = 4 + int(CHAR_WIDTH * max((len(f"{t:.2f} s") for _, t in ordered), default=6)) + 10
    scale = (width - left - right) / total
    height = 40 + len(ordered) * (bar + gap) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<text x="10" y="20" font-weight="bold">{html.escape(title)}: boot timeline ({total:.2f} s)</text>',
    ]
    start = 0.0
    for index, (name, t) in enumerate(ordered):
        y = 35 + index * (bar + gap)
        x = left + start * scale
        w = max(1.0, (t - start) * scale)
        colour = PHASE_COLOURS[index % len(PHASE_COLOURS)]
        parts.append(f'<text x="10" y="{y + 15}">{html.escape(name)}</text>')
        parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}" fill="{colour}">'
                     f'<title>{html.escape(name)}: {start:.3f} - {t:.3f} s</title></rect>')
        parts.append(f'<text x="{x + w + 4:.1f}" y="{y + 15}">{t:.2f} s</text>')
        start = t
    axis_y = 35 + len(ordered) * (bar + gap) + 5
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="black"/>')
    for tick in range(int(total) + 1):
        x = left + tick * scale
        parts.append(f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 4}" stroke="black"/>')
        parts.append(f'<text x="{x - 4:.1f}" y="{axis_y + 16}">{tick}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def junit_xml(suite: str, rows: list[dict[str, object]]) -> str:
    """JUnit XML of a `bootmatrix run`: one testcase per cell; unavailable cells are skipped, interrupted
    ones are errors. A failure's body is its reason and the console's last lines, which are also the
    case's system-out (what CI pages show beside a failed test)."""
    failures = sum(r["result"] == "fail" for r in rows)
    errors = sum(r["result"] == "interrupted" for r in rows)
    skipped = sum(r["result"] == "unavailable" for r in rows)
    root = ET.Element("testsuite", name=suite, tests=str(len(rows)), failures=str(failures), errors=str(errors),
                      skipped=str(skipped))
    for row in rows:
        milestones = row.get("milestones") or {}
        ready = milestones.get("ready", 0.0) if isinstance(milestones, dict) else 0.0
        case = ET.SubElement(root, "testcase", classname="bootmatrix.run", name=str(row["cell"]), time=f"{ready:.3f}")
        tail = str(row.get("console_tail") or "")
        if row["result"] == "fail":
            body = str(row.get("reason", "")) + (f"\n\nlast console lines:\n{tail}" if tail else "")
            ET.SubElement(case, "failure", message=str(row.get("reason", ""))).text = (
                body + "\n\n" + json.dumps(row, default=str))
        elif row["result"] == "interrupted":
            ET.SubElement(case, "error", message=str(row.get("reason", "")))
        elif row["result"] == "unavailable":
            ET.SubElement(case, "skipped", message=str(row.get("reason", "")))
        if tail:
            ET.SubElement(case, "system-out").text = tail
        properties = ET.SubElement(case, "properties")
        for key in ("accel", "qemu", "firmware_set"):
            ET.SubElement(properties, "property", name=key, value=str(row.get(key, "")))
    return ET.tostring(root, encoding="unicode") + "\n"


def attach_vm_to_allure(workdir: Path, name: str, milestones: dict[str, float], metrics: dict[str, float],
                        parameters: dict[str, str]) -> None:
    """Parameters, one step per boot phase, and the VM's files, on the current allure test (no-op without
    --alluredir: allure's API does nothing when its plugin is not reporting)."""
    import allure

    for key, value in parameters.items():
        allure.dynamic.parameter(key, value)
    previous = 0.0
    for phase, t in sorted(milestones.items(), key=lambda item: item[1]):
        with allure.step(f"{name}: {phase} at {t:.3f} s (+{t - previous:.3f} s)"):
            pass
        previous = t
    files = [
        ("console.log", "console transcript", allure.attachment_type.TEXT),
        ("argv.txt", "QEMU argv", allure.attachment_type.TEXT),
        ("qmp-events.jsonl", "QMP events", allure.attachment_type.TEXT),
        ("timeline.svg", "boot timeline", allure.attachment_type.SVG),
    ]
    for filename, label, kind in files:
        path = workdir / filename
        if path.exists():
            allure.attach.file(str(path), name=f"{name}: {label}", attachment_type=kind)
    allure.attach(json.dumps({"milestones": milestones, "metrics": metrics}, indent=2), name=f"{name}: metrics",
                  attachment_type=allure.attachment_type.JSON)


def plot_history(rows: list[Row], target: Path, title: str) -> Path:
    """One PNG: each metric's values over time (one line per metric), with run times on the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4.5))
    by_metric: dict[str, list[Row]] = {}
    for row in rows:
        by_metric.setdefault(row.metric, []).append(row)
    for metric, series in sorted(by_metric.items()):
        label = f"{metric} ({series[0].unit})"
        when = mdates.date2num([datetime.fromtimestamp(r.recorded) for r in series])
        axis.plot(when, [r.value for r in series], marker="o", label=label)
    axis.set_title(title)
    axis.set_xlabel("run (local time)")
    axis.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M:%S"))
    figure.autofmt_xdate()
    axis.set_ylabel("value")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target
