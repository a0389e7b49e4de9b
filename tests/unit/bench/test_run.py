"""bench/run.py: the committed results, merging split runs, names of results files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bench.procstat import GROUPS
from bench.report import render_markdown
from bench.run import main, merge_results, slug
from bench.targets import evaluate_targets
from tests.unit.bench.results import RESULT_FILES, stored


def test_committed_results_are_there() -> None:
    assert "cpu" in RESULT_FILES




def test_merge_results_takes_new_scenarios_over_old_and_recomputes_targets() -> None:
    base = stored("cpu")
    old = copy.deepcopy(base)
    old["scenarios"] = {k: base["scenarios"][k] for k in ("tabular-ig", "shapes-gradcam")}
    old["roofline"] = {k: base["roofline"][k] for k in ("breast-cancer/input", "shapes/layer")}
    new = copy.deepcopy(base)
    new["created"] = "2030-01-01T00:00:00+00:00"
    new["total_seconds"] = 10.04
    new["loadavg_start"] = [9.0, 9.0, 9.0]
    new["scenarios"] = {k: copy.deepcopy(base["scenarios"][k]) for k in ("shapes-gradcam", "resnet50-ig")}
    for c in new["scenarios"]["shapes-gradcam"]["cells"]:
        c["ratio"] = 1.5  # the new shapes run misses its target
    new["roofline"] = {"shapes/layer": {**base["roofline"]["shapes/layer"], "rows_per_s": 1.0},
                       "resnet50/input": base["roofline"]["resnet50/input"]}
    new["targets"] = []
    old_before, new_before = copy.deepcopy(old), copy.deepcopy(new)

    merged = merge_results(old, new)

    assert old == old_before and new == new_before
    assert list(merged["scenarios"]) == ["tabular-ig", "shapes-gradcam", "resnet50-ig"]
    assert merged["scenarios"]["tabular-ig"] == old["scenarios"]["tabular-ig"]
    assert merged["scenarios"]["shapes-gradcam"] == new["scenarios"]["shapes-gradcam"]
    assert merged["roofline"] == {"breast-cancer/input": old["roofline"]["breast-cancer/input"],
                                  "shapes/layer": new["roofline"]["shapes/layer"],
                                  "resnet50/input": new["roofline"]["resnet50/input"]}
    assert merged["loadavg_start"] == old["loadavg_start"]
    assert merged["created"] == new["created"]
    assert merged["total_seconds"] == round(base["total_seconds"] + 10.04, 1)
    assert merged["merged_runs"] == [old["created"], new["created"]]
    assert merged["targets"] == evaluate_targets("cpu", merged["scenarios"])
    shapes_ratio = [t for t in merged["targets"] if t["scenario"] == "shapes-gradcam" and t["metric"] == "ratio"]
    assert shapes_ratio and all((t["value"], t["pass"]) == (1.5, False) for t in shapes_ratio)
    assert {t["scenario"] for t in merged["targets"]} == {"tabular-ig", "shapes-gradcam", "resnet50-ig"}

    third = {**copy.deepcopy(new), "created": "2031-01-01T00:00:00+00:00", "total_seconds": 1.0}
    again = merge_results(merged, third)
    assert again["merged_runs"] == [old["created"], new["created"], third["created"]]
    assert again["total_seconds"] == round(merged["total_seconds"] + 1.0, 1)


def test_merge_results_judges_by_the_new_runs_device() -> None:
    gpu_runs = [n for n in RESULT_FILES if str(stored(n)["machine"]["device"]).startswith("cuda")]
    cuda = stored(gpu_runs[0]) if gpu_runs else None
    if cuda is None:
        pytest.skip("no GPU results committed")
    cpu = stored("cpu")
    merged = merge_results(cpu, cuda)
    assert merged["targets"] == evaluate_targets("cuda", merged["scenarios"])
    assert {t["metric"] for t in merged["targets"]} <= {"efficiency", "ratio", "tail_ratio"}
    assert any(t["metric"] == "tail_ratio" for t in merged["targets"])



@pytest.mark.parametrize(("text", "expected"), [
    ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
    ("  Tesla  T4 (PCIe) ", "tesla-t4-pcie"),
    ("---", "gpu"),
    ("", "gpu"),
])
def test_slug(text: str, expected: str) -> None:
    assert slug(text) == expected




def test_a_small_run_end_to_end(tmp_path: Path) -> None:
    """`python -m bench.run` as `make bench` runs it, cut to one scenario, one short cell, no roofline."""
    out = tmp_path / "small"
    assert main(["--scenarios", "tabular-ig", "--concurrency", "2", "--duration", "1", "--requests", "30",
                 "--no-roofline", "--out", str(out), "--note", "a test run", "--pin-client", "none"]) == 0
    result = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert out.with_suffix(".md").read_text(encoding="utf-8") == render_markdown(result)
    assert result["load_generator"] == {"kind": "wrk", "pin_cpu": None}
    assert result["note"] == "a test run" and result["roofline"] == {}
    entry = result["scenarios"]["tabular-ig"]
    assert entry["outputs_match"]["ok"] is True
    (cell,) = entry["cells"]
    assert cell["concurrency"] == 2
    for name in ("ours", "naive"):
        assert cell[name]["client"] == "wrk" and cell[name]["ok"] > 0 and cell[name]["errors"] == {}
        assert cell[name]["server_cpu"]["ms_per_request"] > 0
        assert set(cell[name]["server_cpu"]["groups_ms_per_request"]) == set(GROUPS)
    assert cell["ratio"] == pytest.approx(cell["ours"]["throughput_rps"] / cell["naive"]["throughput_rps"])
    assert result["targets"] == evaluate_targets("cpu", result["scenarios"])
    assert {t["metric"] for t in result["targets"]} == {"p99_p50"}  # only cells at 2: no ratio target
