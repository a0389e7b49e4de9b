"""The speed targets, judged from a run's cells (shown in the results, never asserted in tests).

CPU: issue 13 (2-core host, ratios side by side in one run). CUDA: issue 5.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TARGETS_DOC", "evaluate_targets"]

TARGETS_DOC: dict[str, list[tuple[str, int, str, float, str]]] = {
    # (scenario or "*" for each, concurrency (0: every cell / the best cell), metric, threshold, text)
    "cpu": [
        ("tabular-ig", 32, "ratio", 8.0, "CPU, 32 concurrent: tabular IG >= 8x naive"),
        ("tabular-ig", 64, "ratio", 8.0, "CPU, 64 concurrent: tabular IG >= 8x naive"),
        ("shapes-gradcam", 32, "ratio", 4.0, "CPU, 32 concurrent: shapes GradCAM >= 4x naive"),
        ("shapes-gradcam", 64, "ratio", 4.0, "CPU, 64 concurrent: shapes GradCAM >= 4x naive"),
        ("shapes-ig", 32, "ratio", 2.5, "CPU, 32 concurrent: image IG (shapes, n_steps 16) >= 2.5x naive"),
        ("shapes-ig", 64, "ratio", 2.5, "CPU, 64 concurrent: image IG (shapes, n_steps 16) >= 2.5x naive"),
        ("*", 0, "p99_p50", 3.0, "CPU: our p99 <= 3x our p50 in every cell (the worst cell shown)"),
        ("*", 1, "p50_ratio", 1.0, "CPU, concurrency 1: our p50 <= 1.0x naive p50"),
        ("shapes-gradcam", 64, "server_cpu_ms", 2.5,
         "CPU, 64 concurrent: our server CPU per shapes GradCAM request <= 2.5 ms"),
    ],
    "cuda": [
        ("resnet50-ig", 0, "efficiency", 0.8, "GPU: resnet50 IG n_steps 32 >= 80% of the roofline"),
        ("shapes-gradcam", 64, "ratio", 10.0, "GPU, 64 concurrent: GradCAM >= 10x naive"),
        ("resnet50-gradcam", 64, "ratio", 10.0, "GPU, 64 concurrent: GradCAM >= 10x naive"),
        ("*", 64, "tail_ratio", 4.0, "GPU: our p99 at 64 concurrent < 4x our p50 at concurrency 1"),
    ],
}
LOWER_IS_BETTER = ("p50_ratio", "tail_ratio", "p99_p50", "server_cpu_ms")


def _latency(cell: dict[str, Any] | None) -> dict[str, float]:
    return (cell or {}).get("ours", {}).get("latency_ms") or {}


def _value(cells: list[dict[str, Any]], conc: int, metric: str) -> float | None:
    at = next((c for c in cells if c["concurrency"] == conc), None)
    if metric == "efficiency":
        effs = [c["efficiency"] for c in cells if c.get("efficiency") is not None]
        return max(effs) if effs else None
    if metric == "tail_ratio":
        one, top = _latency(next((c for c in cells if c["concurrency"] == 1), None)), _latency(at)
        return top["p99"] / one["p50"] if one and top else None
    if metric == "p99_p50":
        tails = [lat["p99"] / lat["p50"] for lat in map(_latency, cells) if lat and lat["p50"] > 0]
        return max(tails) if tails else None
    if metric == "server_cpu_ms":
        return ((at or {}).get("ours", {}).get("server_cpu") or {}).get("ms_per_request")
    return at.get(metric) if at else None


def evaluate_targets(device_type: str, scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, conc, metric, threshold, text in TARGETS_DOC.get(device_type, []):
        for scen in [name] if name != "*" else list(scenarios):
            if scen not in scenarios:
                continue
            value = _value(scenarios[scen]["cells"], conc, metric)
            if value is None:
                continue
            if metric == "tail_ratio":
                passed = value < threshold
            elif metric in LOWER_IS_BETTER:
                passed = value <= threshold
            else:
                passed = value >= threshold
            out.append({"target": text, "scenario": scen, "concurrency": conc or None, "metric": metric,
                        "value": round(value, 3), "threshold": threshold, "pass": passed})
    return out
