"""`explainserve serve --ray` flags: refused without --ray, settings checked before any cluster."""

from __future__ import annotations

import pytest

from app.cli import main


def test_replica_flags_need_ray(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--replicas", "2"]) == 2
    assert "need --ray" in capsys.readouterr().err


def test_inconsistent_cluster_settings_stop_before_joining_a_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--ray", "--device", "cpu", "--min-replicas", "3", "--max-replicas", "2"]) == 2
    assert "RAY_MAX_REPLICAS must be at least RAY_MIN_REPLICAS" in capsys.readouterr().err
