"""bench/run.py: target checks, merging, the markdown report, request bodies, the subset catalog, servers."""

from __future__ import annotations

import base64
import copy
import io
import json
import math
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from app.inference.catalog import load_catalog
from app.inference.loading import load_model
from bench.run import (
    BENCH,
    CATALOG,
    SCENARIOS,
    Server,
    child_env,
    evaluate_targets,
    free_port,
    make_bodies,
    merge_results,
    render_markdown,
    run_cell,
    service_settings,
    slug,
    subset_catalog,
)
from tests.conftest import CATALOG as DEMO_CATALOG
from tests.conftest import LiveServer

RESULTS = BENCH / "results"
RESULT_FILES = sorted(p.stem for p in RESULTS.glob("*.json") if not p.stem.startswith("ray"))  # bench.ray_bench's


def stored(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    return result


def bench_entry(name: str) -> dict[str, Any]:
    entry: dict[str, Any] = next(m for m in tomllib.loads(CATALOG.read_text())["models"] if m["name"] == name)
    return entry


# --------------------------------------------------------------------------- the committed results


def test_committed_results_are_there() -> None:
    assert "cpu" in RESULT_FILES


@pytest.mark.parametrize("name", RESULT_FILES)
def test_render_markdown_reproduces_the_committed_report(name: str) -> None:
    assert render_markdown(stored(name)) == (RESULTS / f"{name}.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", RESULT_FILES)
def test_evaluate_targets_reproduces_the_committed_targets(name: str) -> None:
    result = stored(name)
    device_type = "cuda" if result["machine"]["device"].startswith("cuda") else "cpu"
    assert evaluate_targets(device_type, result["scenarios"]) == result["targets"]


# --------------------------------------------------------------------------- evaluate_targets


def cell(concurrency: int, ratio: float | None = None, p50_ratio: float | None = None,
         efficiency: float | None = None, latency: dict[str, float] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"concurrency": concurrency, "ratio": ratio, "efficiency": efficiency,
                           "ours": {"latency_ms": latency or {}}}
    if p50_ratio is not None:
        out["p50_ratio"] = p50_ratio
    return out


def scen(*cells: dict[str, Any]) -> dict[str, Any]:
    return {"cells": list(cells)}


def verdicts(targets: list[dict[str, Any]]) -> list[tuple[str, str, float, bool]]:
    return [(t["scenario"], t["metric"], t["value"], t["pass"]) for t in targets]


@pytest.mark.parametrize(("ratio", "passed"), [(5.0, True), (4.9999, False), (12.8, True), (0.5, False)])
def test_cpu_tabular_ratio_threshold_is_inclusive(ratio: float, passed: bool) -> None:
    targets = evaluate_targets("cpu", {"tabular-ig": scen(cell(64, ratio=ratio))})
    assert len(targets) == 1
    t = targets[0]
    assert t == {"target": "CPU, 64 concurrent: tabular IG >= 5x naive", "scenario": "tabular-ig",
                 "concurrency": 64, "metric": "ratio", "value": round(ratio, 3), "threshold": 5.0, "pass": passed}


@pytest.mark.parametrize(("p50_ratio", "passed"), [(1.15, True), (1.1501, False), (0.4, True), (3.0, False)])
def test_cpu_p50_ratio_is_lower_is_better_and_inclusive(p50_ratio: float, passed: bool) -> None:
    targets = evaluate_targets("cpu", {"shapes-gradcam": scen(cell(1, ratio=1.0, p50_ratio=p50_ratio))})
    assert verdicts(targets) == [("shapes-gradcam", "p50_ratio", round(p50_ratio, 3), passed)]
    assert targets[0]["concurrency"] == 1


def test_cpu_targets_in_order_over_every_scenario_and_missing_cells_are_skipped() -> None:
    scenarios = {
        "resnet50-ig": scen(cell(1, ratio=1.2, p50_ratio=0.6481)),
        "shapes-gradcam": scen(cell(1, ratio=2.0, p50_ratio=1.2), cell(64, ratio=1.99)),
        "tabular-ig": scen(cell(1, ratio=1.0), cell(16, ratio=9.0), cell(64, ratio=None)),
    }
    assert verdicts(evaluate_targets("cpu", scenarios)) == [
        # tabular-ig at 64 has no ratio, and no p50 ratio at 1: both skipped.
        ("shapes-gradcam", "ratio", 1.99, False),
        ("resnet50-ig", "p50_ratio", 0.648, True),
        ("shapes-gradcam", "p50_ratio", 1.2, False),
    ]


def test_no_scenarios_or_unknown_device_give_no_targets() -> None:
    assert evaluate_targets("cpu", {}) == []
    assert evaluate_targets("mps", {"tabular-ig": scen(cell(64, ratio=9.0))}) == []


@pytest.mark.parametrize(("efficiencies", "value", "passed"), [
    ([0.5, None, 0.81], 0.81, True),
    ([0.8], 0.8, True),
    ([0.7999], 0.8, False),  # rounded for the report, decided on the exact value
    ([0.2, 0.3], 0.3, False),
])
def test_cuda_efficiency_is_the_best_cell(efficiencies: list[float | None], value: float, passed: bool) -> None:
    cells = [cell(c, efficiency=e) for c, e in zip((1, 16, 64), efficiencies, strict=False)]
    targets = evaluate_targets("cuda", {"resnet50-ig": scen(*cells)})
    assert verdicts(targets) == [("resnet50-ig", "efficiency", value, passed)]
    assert targets[0]["concurrency"] is None


def test_cuda_efficiency_without_any_value_is_skipped() -> None:
    assert evaluate_targets("cuda", {"resnet50-ig": scen(cell(1), cell(64))}) == []


@pytest.mark.parametrize(("p99_at_64", "passed"), [(39.9, True), (40.0, False), (80.0, False)])
def test_cuda_tail_ratio_is_strict(p99_at_64: float, passed: bool) -> None:
    scenarios = {"shapes-gradcam": scen(cell(1, latency={"p50": 10.0, "p99": 12.0}),
                                        cell(64, ratio=11.0, latency={"p50": 20.0, "p99": p99_at_64}))}
    assert verdicts(evaluate_targets("cuda", scenarios)) == [
        ("shapes-gradcam", "ratio", 11.0, True),
        ("shapes-gradcam", "tail_ratio", round(p99_at_64 / 10.0, 3), passed),
    ]


def test_cuda_tail_ratio_needs_both_cells_with_latencies() -> None:
    no_one = {"resnet50-gradcam": scen(cell(64, latency={"p50": 1.0, "p99": 2.0}))}
    no_answers = {"resnet50-gradcam": scen(cell(1, latency={"p50": 1.0, "p99": 2.0}), cell(64))}
    assert evaluate_targets("cuda", no_one) == []
    assert evaluate_targets("cuda", no_answers) == []


# --------------------------------------------------------------------------- merge_results


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
    assert [(t["value"], t["pass"]) for t in shapes_ratio] == [(1.5, False)]
    assert {t["scenario"] for t in merged["targets"]} == {"tabular-ig", "shapes-gradcam", "resnet50-ig"}

    third = {**copy.deepcopy(new), "created": "2031-01-01T00:00:00+00:00", "total_seconds": 1.0}
    again = merge_results(merged, third)
    assert again["merged_runs"] == [old["created"], new["created"], third["created"]]
    assert again["total_seconds"] == round(merged["total_seconds"] + 1.0, 1)


def test_merge_results_judges_by_the_new_runs_device() -> None:
    cuda = stored(next(n for n in RESULT_FILES if n != "cpu")) if len(RESULT_FILES) > 1 else None
    if cuda is None:
        pytest.skip("no GPU results committed")
    cpu = stored("cpu")
    merged = merge_results(cpu, cuda)
    assert merged["targets"] == evaluate_targets("cuda", merged["scenarios"])
    assert {t["metric"] for t in merged["targets"]} <= {"efficiency", "ratio", "tail_ratio"}
    assert any(t["metric"] == "tail_ratio" for t in merged["targets"])


# --------------------------------------------------------------------------- render_markdown


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
    assert cols[7] == "–"  # p50 ratio (NaN)
    assert cols[9] == "–"  # efficiency
    assert cols[11] == f"{first['ours']['ok']} / {first['naive']['ok']}"  # no (t)
    other = next(line for line in lines if line.startswith("| tabular-ig | 16 |"))
    assert other.split("|")[12].strip().endswith("(t)")
    same = next(line for line in lines if line.startswith("- tabular-ig: "))
    assert same == '- tabular-ig: DIFFERENT {"ok": false, "detail": "status ours 500"}'
    assert lines[lines.index(same) + 1] == "  - a note for this scenario"
    assert next(line for line in lines if line.startswith("- shapes-gradcam: ")).startswith("- shapes-gradcam: same {")


# --------------------------------------------------------------------------- make_bodies


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_make_bodies_are_deterministic_distinct_single_instances(name: str) -> None:
    scenario = SCENARIOS[name]
    bodies = make_bodies(scenario)
    assert bodies == make_bodies(scenario)
    assert len(bodies) == 8 == len(set(bodies))
    assert len(make_bodies(scenario, 3)) == 3
    for body in bodies:
        data = json.loads(body)
        assert set(data) == {"instances", "method", "params"}
        assert data["method"] == scenario.method and data["params"] == scenario.params
        assert len(data["instances"]) == 1


def test_tabular_bodies_are_rows_by_feature_name() -> None:
    entry = bench_entry("breast-cancer")
    demo = next(s for s in load_catalog(DEMO_CATALOG) if s.name == "breast-cancer")
    assert entry["features"] == demo.features
    mean, std = np.array(entry["tabular"]["mean"]), np.array(entry["tabular"]["std"])
    rows = []
    for body in make_bodies(SCENARIOS["tabular-ig"]):
        (instance,) = json.loads(body)["instances"]
        assert list(instance) == entry["features"]
        rows.append([instance[f] for f in entry["features"]])
    values = np.array(rows)
    assert (values >= 0).all()
    assert (values <= mean + 6 * std).all()
    # Around the training distribution: not constant, not all clipped.
    assert (values.std(axis=0) > 0).all()
    assert (np.abs(values.mean(axis=0) - mean) < 2 * std).all()


@pytest.mark.parametrize("name", ["shapes-gradcam", "resnet50-gradcam"])
def test_image_bodies_are_pngs_of_the_model_size(name: str) -> None:
    scenario = SCENARIOS[name]
    for body in make_bodies(scenario):
        (instance,) = json.loads(body)["instances"]
        image = Image.open(io.BytesIO(base64.b64decode(instance["b64"])))
        assert image.format == "PNG"
        assert image.size == scenario.image_size
        assert image.mode == "RGB"
        assert np.asarray(image).std() > 0


@pytest.mark.parametrize(("name", "model"), [("tabular-ig", "breast-cancer"), ("shapes-gradcam", "shapes")])
def test_our_service_takes_every_body(live: LiveServer, name: str, model: str) -> None:
    for body in make_bodies(SCENARIOS[name]):
        response = httpx.post(f"{live.url}/v1/models/{model}/explain", content=body, trust_env=False,
                              headers={"content-type": "application/json"}, timeout=120)
        assert response.status_code == 200, response.text[:300]
        answer = response.json()
        assert answer["method"] == SCENARIOS[name].method
        assert len(answer["explanations"]) == 1


# --------------------------------------------------------------------------- subset_catalog


def test_subset_catalog_has_only_the_named_models_with_absolute_paths(tmp_path: Path) -> None:
    path = subset_catalog(["shapes", "breast-cancer"], tmp_path)
    assert path == tmp_path / "catalog.toml"
    written = tomllib.loads(path.read_text(encoding="utf-8"))["models"]
    assert [m["name"] for m in written] == ["breast-cancer", "shapes"]
    for entry in written:
        original = bench_entry(entry["name"])
        for key in ("weights", "labels_file"):
            if key in original:
                assert Path(entry[key]).is_absolute() and Path(entry[key]).is_file()
                assert Path(entry[key]) == (CATALOG.parent / original[key]).resolve()
        assert {k: v for k, v in entry.items() if k not in ("weights", "labels_file")} == {
            k: v for k, v in original.items() if k not in ("weights", "labels_file")}
    # The service's own loader reads it, from anywhere, and gets the demo weights.
    specs = load_catalog(path)
    assert [s.name for s in specs] == ["breast-cancer", "shapes"]
    demo = next(s for s in load_catalog(DEMO_CATALOG) if s.name == "breast-cancer")
    x = torch.rand(3, 30) * 10
    with torch.no_grad():
        ours = load_model(specs[0], torch.device("cpu")).module(x)
        reference = load_model(demo, torch.device("cpu")).module(x)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_subset_catalog_of_nothing_known_is_empty(tmp_path: Path) -> None:
    path = subset_catalog(["no-such-model"], tmp_path)
    assert tomllib.loads(path.read_text(encoding="utf-8")) == {}


def test_random_weights_are_seeded_and_replace_the_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # Whatever the global random state (each server process has its own), the same initialisation.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        first = subset_catalog(["breast-cancer"], tmp_path / "a", random_weights=["breast-cancer"])
        torch.manual_seed(2)
        second = subset_catalog(["breast-cancer"], tmp_path / "b", random_weights=["breast-cancer"])
    (entry_a,) = tomllib.loads(first.read_text())["models"]
    (entry_b,) = tomllib.loads(second.read_text())["models"]
    assert entry_a["weights"] == str(tmp_path / "a" / "breast-cancer-random.safetensors")
    tensors_a, tensors_b = load_file(entry_a["weights"]), load_file(entry_b["weights"])
    assert tensors_a.keys() == tensors_b.keys()
    for key in tensors_a:
        torch.testing.assert_close(tensors_a[key], tensors_b[key], rtol=0, atol=0)
    trained = load_file(str((CATALOG.parent / bench_entry("breast-cancer")["weights"]).resolve()))
    assert trained.keys() == tensors_a.keys()
    assert any(not torch.equal(trained[k], tensors_a[k]) for k in trained)
    (spec,) = load_catalog(first)
    assert load_model(spec, torch.device("cpu")).spec.name == "breast-cancer"


def test_a_torchvision_entry_without_weights_gets_a_written_initialisation(tmp_path: Path) -> None:
    path = subset_catalog(["resnet50"], tmp_path)
    (entry,) = tomllib.loads(path.read_text())["models"]
    assert entry["weights"] == str(tmp_path / "resnet50-random.safetensors")
    assert Path(entry["weights"]).stat().st_size > 50_000_000
    assert Path(entry["labels_file"]) == BENCH / "resnet50_labels.txt"
    assert entry["image"]["gradcam_layer"] == "layer4"


# --------------------------------------------------------------------------- small helpers


@pytest.mark.parametrize(("text", "expected"), [
    ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
    ("  Tesla  T4 (PCIe) ", "tesla-t4-pcie"),
    ("---", "gpu"),
    ("", "gpu"),
])
def test_slug(text: str, expected: str) -> None:
    assert slug(text) == expected


def test_service_settings_applies_overrides_and_restores_the_environment() -> None:
    before = dict(os.environ)
    settings = service_settings({"MAX_BATCH_SIZE": "7", "MAX_BATCH_DELAY_MS": "3.5"})
    assert dict(os.environ) == before
    assert settings["max_batch_size"] == 7
    assert settings["max_batch_delay_ms"] == 3.5
    assert settings["env_overrides"] == {"MAX_BATCH_SIZE": "7", "MAX_BATCH_DELAY_MS": "3.5"}
    assert {"max_batch_rows", "workers_per_device", "max_queue", "cpu_chunk_mb"} <= set(settings)


def test_child_env_makes_the_repository_importable() -> None:
    env = child_env()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(BENCH.parent)
    assert env["PYTHONUNBUFFERED"] == "1"


# --------------------------------------------------------------------------- Server and run_cell


def test_server_waits_for_readiness_measures_cpu_and_stops(tmp_path: Path) -> None:
    port = free_port()
    server = Server("web", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], child_env(),
                    port, "/", tmp_path)
    try:
        server.wait_ready(60)
        cpu = server.cpu_seconds()
        assert cpu >= 0.0 and not math.isnan(cpu)
        assert '"GET / HTTP/1.1" 200' in server.tail()
    finally:
        server.stop()
    assert server.proc.returncode is not None
    assert math.isnan(server.cpu_seconds())


def test_server_that_exits_at_start_is_reported(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('cannot start: boom'); sys.exit(3)"]
    server = Server("broken", argv, child_env(), free_port(), "/", tmp_path)
    try:
        with pytest.raises(RuntimeError, match=r"(?s)broken exited with 3.*cannot start: boom"):
            server.wait_ready(60)
    finally:
        server.stop()


def test_run_cell_against_the_naive_server_process(tmp_path: Path) -> None:
    """The way run.py drives a cell: a naive server process on a subset catalog, warm-up, then the cell."""
    catalog = subset_catalog(["breast-cancer"], tmp_path)
    port = free_port()
    argv = [sys.executable, "-m", "bench.naive_server", "--catalog", str(catalog), "--port", str(port),
            "--device", "cpu", "--models", "breast-cancer", "--png", "default"]
    server = Server("naive", argv, child_env(), port, "/healthz", tmp_path)
    try:
        server.wait_ready(120)
        scenario = SCENARIOS["tabular-ig"]
        result = run_cell(server, scenario, make_bodies(scenario, 4), concurrency=2, duration=30.0,
                          max_requests=12, drain=30.0, client="raw")
    finally:
        server.stop()
    assert result.sent == result.ok == 12 and result.errors == {}
    assert not result.time_bounded
    assert result.rows_per_request == 32
    assert result.rows_per_s == pytest.approx(result.throughput_rps * 32)
    assert result.sampled["server_cpu_ms_per_request"] > 0
    assert result.sampled["client_cpu_ms_per_request"] >= 0
    assert set(result.sampled) == {"server_cpu_ms_per_request", "client_cpu_ms_per_request"}  # naive: not sampled
