"""bench/machine.py: what the results record about our service's settings."""

from __future__ import annotations

import os

from bench.machine import service_settings


def test_service_settings_applies_overrides_and_restores_the_environment() -> None:
    before = dict(os.environ)
    settings = service_settings({"MAX_BATCH_SIZE": "7", "MAX_BATCH_DELAY_MS": "3.5"})
    assert dict(os.environ) == before
    assert settings["max_batch_size"] == 7
    assert settings["max_batch_delay_ms"] == 3.5
    assert settings["env_overrides"] == {"MAX_BATCH_SIZE": "7", "MAX_BATCH_DELAY_MS": "3.5"}
    assert {"max_batch_rows", "workers_per_device", "max_queue", "cpu_chunk_mb"} <= set(settings)


