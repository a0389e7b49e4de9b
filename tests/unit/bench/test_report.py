"""bench/report.py: the results markdown, rendered from the results JSON alone."""

from __future__ import annotations

from typing import Any

import pytest

from bench.common import RESULTS
from bench.procstat import GROUPS
from bench.report import describe_client, render_markdown
from tests.unit.bench.results import RESULT_FILES, stored


@pytest.mark.parametrize("name", RESULT_FILES)
def test_render_markdown_reproduces_the_committed_report(name: str) -> None:
    assert render_markdown(stored(name)) == (RESULTS / f"{name}.md").read_text(encoding="utf-8")


def test_render_markdown_marks_missing_and_failed_values() -> None:
    result = stored("cpu")
    result["note"] = "after the batcher change"
    result["random_weights"] = ["resnet50"]
    result["targets"] = []
    result["roofline"]["resnet50/input"] = {}
    result["roofline"]["shapes/layer"]["sweep"].append({"batch": 128, "oom": True})
    tab = result["scenarios"]["tabular-ig"]
    tab["outputs_match"] = {"ok": False, "detail": "status ours 500"}
    tab["note"] = "a note for this scenario"
    first = tab["cells"][0]
    first["efficiency"] = None
    first["naive"]["latency_ms"] = {}
    first["ours"]["time_bounded"] = first["naive"]["time_bounded"] = False
    first["p50_ratio"] = float("nan")
    tab["cells"][1]["ours"]["time_bounded"], tab["cells"][1]["naive"]["time_bounded"] = False, True

    lines = render_markdown(result).splitlines()

    assert lines[2].endswith(" Note: after the batcher change")
    assert "- Random weights (seeded initialisation of the builder, weights file not used): resnet50" in lines
    assert "| (none measured) | | | | |" in lines
    assert "| resnet50/input | failed | | | |" in lines
    shapes_roof = next(line for line in lines if line.startswith("| shapes/layer |"))
    assert shapes_roof.endswith(", 128: OOM |")
    row = next(line for line in lines if line.startswith("| tabular-ig | 1 |"))
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert cols[6] == "– / –"  # naive p50 / p99
    lat = first["ours"]["latency_ms"]
    assert cols[7] == f"{lat['p99'] / lat['p50']:.1f}x / –"  # p99/p50 ours / naive
    assert cols[8] == "–"  # p50 ratio (NaN)
    assert cols[10] == "–"  # efficiency
    assert cols[12] == f"{first['ours']['ok']} / {first['naive']['ok']}"  # no (t)
    other = next(line for line in lines if line.startswith("| tabular-ig | 16 |"))
    assert other.split("|")[13].strip().endswith("(t)")
    same = next(line for line in lines if line.startswith("- tabular-ig: "))
    assert same == '- tabular-ig: DIFFERENT {"ok": false, "detail": "status ours 500"}'
    assert lines[lines.index(same) + 1] == "  - a note for this scenario"
    assert next(line for line in lines if line.startswith("- shapes-gradcam: ")).startswith("- shapes-gradcam: same {")




def _without_breakdown(result: dict[str, Any]) -> dict[str, Any]:
    """The committed results with no per-thread breakdown in any cell (as runs before it wrote)."""
    for scenario in result["scenarios"].values():
        for cell in scenario["cells"]:
            for server in ("ours", "naive"):
                cpu = cell.get(server, {}).get("server_cpu") or {}
                cpu.pop("groups_ms_per_request", None)
                cpu.pop("children_ms_per_request", None)
    return result


def test_the_cpu_table_shows_each_group_per_request_and_the_children_by_name() -> None:
    result = _without_breakdown(stored("cpu"))
    cell = result["scenarios"]["shapes-gradcam"]["cells"][-1]
    groups = {g: 0.25 * i for i, g in enumerate(GROUPS)}
    cell["ours"]["server_cpu"] = {"ms_per_request": 4.2, "cores_busy": 1.87, "wall_s": 8.1,
                                  "groups_ms_per_request": groups,
                                  "children_ms_per_request": {"render-proc": 1.5, "(exited)": 0.001}}
    lines = render_markdown(result).splitlines()
    header = next(line for line in lines if line.startswith("| scenario / conc / server |"))
    assert [c.strip() for c in header.strip("|").split("|")][1:len(GROUPS) + 1] == list(GROUPS)
    rows = [line for line in lines if line.startswith("| shapes-gradcam / ")]
    # Only the cell that has the breakdown.
    shown = " | ".join(f"{0.25 * i:.2f}" for i in range(len(GROUPS)))
    assert rows == [f"| shapes-gradcam / {cell['concurrency']} / ours | {shown} | 4.20 | 1.87 | render-proc 1.50 |"]
    time_row = next(line for line in lines if line.startswith(f"| shapes-gradcam | {cell['concurrency']} | ")
                    and line.count("|") == 11)
    assert " | 4.20 / " in time_row and " | 1.87 / " in time_row


def test_without_any_breakdown_the_cpu_table_says_so() -> None:
    lines = render_markdown(_without_breakdown(stored("cpu"))).splitlines()
    title = lines.index("## Server CPU by thread group (ms per request)")
    assert lines[title + 6].startswith("| (not recorded: this run predates the per-thread accounting) |")


@pytest.mark.parametrize(("record", "text"), [
    ({"kind": "wrk", "pin_cpu": None}, "wrk (1 thread)"),
    ({"kind": "wrk", "pin_cpu": 15}, "wrk (1 thread, pinned to CPU 15)"),
    ({"kind": "raw", "pin_cpu": None}, "Python (raw client)"),
    ({"kind": "httpx"}, "Python (httpx client)"),
])
def test_describe_client(record: dict[str, Any], text: str) -> None:
    assert describe_client(record) == text
