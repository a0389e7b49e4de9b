"""bench/targets.py: the speed targets judged from a run's cells."""

from __future__ import annotations

from typing import Any

import pytest

from bench.targets import evaluate_targets
from tests.unit.bench.results import RESULT_FILES, stored


@pytest.mark.parametrize("name", RESULT_FILES)
def test_evaluate_targets_reproduces_the_committed_targets(name: str) -> None:
    result = stored(name)
    device_type = "cuda" if result["machine"]["device"].startswith("cuda") else "cpu"
    assert evaluate_targets(device_type, result["scenarios"]) == result["targets"]


def cell(concurrency: int, ratio: float | None = None, p50_ratio: float | None = None,
         efficiency: float | None = None, latency: dict[str, float] | None = None,
         server_cpu_ms: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"concurrency": concurrency, "ratio": ratio, "efficiency": efficiency,
                           "ours": {"latency_ms": latency or {}}}
    if p50_ratio is not None:
        out["p50_ratio"] = p50_ratio
    if server_cpu_ms is not None:
        out["ours"]["server_cpu"] = {"ms_per_request": server_cpu_ms}
    return out


def scen(*cells: dict[str, Any]) -> dict[str, Any]:
    return {"cells": list(cells)}


def verdicts(targets: list[dict[str, Any]]) -> list[tuple[str, str, float, bool]]:
    return [(t["scenario"], t["metric"], t["value"], t["pass"]) for t in targets]


@pytest.mark.parametrize(("ratio", "passed"), [(8.0, True), (7.9999, False), (12.8, True), (0.5, False)])
def test_cpu_tabular_ratio_threshold_is_inclusive(ratio: float, passed: bool) -> None:
    targets = evaluate_targets("cpu", {"tabular-ig": scen(cell(64, ratio=ratio))})
    assert targets == [{"target": "CPU, 64 concurrent: tabular IG >= 8x naive", "scenario": "tabular-ig",
                        "concurrency": 64, "metric": "ratio", "value": round(ratio, 3), "threshold": 8.0,
                        "pass": passed}]


@pytest.mark.parametrize(("scenario", "threshold"), [("tabular-ig", 8.0), ("shapes-gradcam", 4.0),
                                                     ("shapes-ig", 2.5)])
def test_cpu_ratio_targets_hold_at_32_and_at_64(scenario: str, threshold: float) -> None:
    targets = evaluate_targets("cpu", {scenario: scen(cell(16, ratio=0.1), cell(32, ratio=threshold),
                                                      cell(64, ratio=threshold - 0.01))})
    assert [(t["concurrency"], t["pass"]) for t in targets] == [(32, True), (64, False)]
    assert {t["threshold"] for t in targets} == {threshold}


@pytest.mark.parametrize(("p50_ratio", "passed"), [(1.0, True), (1.0001, False), (0.4, True), (3.0, False)])
def test_cpu_p50_ratio_is_lower_is_better_and_inclusive(p50_ratio: float, passed: bool) -> None:
    targets = evaluate_targets("cpu", {"shapes-gradcam": scen(cell(1, ratio=1.0, p50_ratio=p50_ratio))})
    assert verdicts(targets) == [("shapes-gradcam", "p50_ratio", round(p50_ratio, 3), passed)]
    assert targets[0]["concurrency"] == 1


@pytest.mark.parametrize(("p99s", "value", "passed"), [
    ([2.0, 30.0, 30.0], 3.0, True),  # p50 10 ms each: the worst cell's p99 is 3x its p50
    ([2.0, 10.0, 30.01], 3.001, False),
    ([35.0, 11.0, 12.0], 3.5, False),  # concurrency 1 counts too
])
def test_cpu_tail_is_the_worst_cell_of_p99_over_p50(p99s: list[float], value: float, passed: bool) -> None:
    cells = [cell(c, latency={"p50": 10.0, "p99": p99}) for c, p99 in zip((1, 32, 64), p99s, strict=True)]
    cells.append(cell(16))  # a cell without answers is left out
    targets = evaluate_targets("cpu", {"tabular-ig": scen(*cells)})
    assert verdicts(targets) == [("tabular-ig", "p99_p50", value, passed)]
    assert targets[0]["concurrency"] is None


@pytest.mark.parametrize(("ms", "passed"), [(2.5, True), (2.5001, False), (4.86, False)])
def test_cpu_server_cpu_per_shapes_gradcam_request(ms: float, passed: bool) -> None:
    targets = evaluate_targets("cpu", {"shapes-gradcam": scen(cell(32, server_cpu_ms=1.0),
                                                              cell(64, server_cpu_ms=ms))})
    assert verdicts(targets) == [("shapes-gradcam", "server_cpu_ms", round(ms, 3), passed)]


def test_cpu_targets_in_order_over_every_scenario_and_missing_cells_are_skipped() -> None:
    scenarios = {
        "resnet50-ig": scen(cell(1, ratio=1.2, p50_ratio=0.6481)),
        "shapes-gradcam": scen(cell(1, ratio=2.0, p50_ratio=1.2), cell(64, ratio=3.99)),
        "tabular-ig": scen(cell(1, ratio=1.0), cell(16, ratio=9.0), cell(64, ratio=None)),
    }
    assert verdicts(evaluate_targets("cpu", scenarios)) == [
        # tabular-ig at 64 has no ratio, and no p50 ratio at 1; no cell has latencies: all skipped.
        ("shapes-gradcam", "ratio", 3.99, False),
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


