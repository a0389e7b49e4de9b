"""bench/stress.py: what it sends is the largest the default limits allow, and its report says
whether each target held."""

from __future__ import annotations

from typing import Any

from app.config import Settings
from bench.stress import bodies, render
from tests.api.test_limits import png_bomb


def test_the_requests_are_the_largest_the_limits_allow() -> None:
    settings = Settings()
    sent = bodies()
    image = sent["shapes"]["instances"]
    assert len(image) == 2 and len(png_bomb(6000, 5000)) < 100_000  # 30 MP each, from a small file
    assert 2 * 6000 * 5000 <= settings.max_request_pixels < 3 * 6000 * 5000
    rows = sent["breast-cancer"]
    assert len(rows["instances"]) == settings.max_instances
    assert len(rows["instances"]) * (rows["params"]["n_steps"] + 2) == settings.max_request_rows


def _result(worst_ms: float, after: float) -> dict[str, Any]:
    return {"clients_per_model": 2, "duration_s": 30.0, "statuses": {"shapes 200": 9, "breast-cancer 200": 40},
            "healthz_ms": {"n": 500, "p50": 5.0, "p99": 40.0, "max": worst_ms},
            "rss_mib": {"before": 900.0, "peak": 1600.0, "after": after},
            "machine": {"cpu_count": 2, "cpu_model": "test"}, "loadavg": [0.5, 0.5, 0.5], "created": "now"}


def test_the_report_says_whether_the_targets_held() -> None:
    held = render(_result(80.0, 950.0))
    assert "max 80.0 ms (target: under 100 ms throughout: met)" in held and "(+6%; target within 20%)" in held
    missed = render(_result(750.0, 1200.0))
    assert "NOT met" in missed and "(+33%" in missed
