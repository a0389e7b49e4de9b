"""Settings -> the Serve deployment's options and the replicas' settings (app/deploy/options.py)."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.deploy import options
from tests.conftest import CATALOG


def settings(**values: object) -> Settings:
    return Settings(**{"models": CATALOG, "device": "cpu", **values})  # type: ignore[arg-type]


def test_fixed_replicas_with_limits_that_follow_the_service_queue() -> None:
    got = options.deployment_options(settings(max_batch_size=32, ray_replicas=3, shutdown_grace_s=20), 0)
    assert got["name"] == options.DEPLOYMENT
    assert got["num_replicas"] == 3 and "autoscaling_config" not in got
    assert got["max_ongoing_requests"] == 64  # two batches: one runs while the next forms
    assert got["max_queued_requests"] == 256
    assert got["backpressure_config"] == {"status_code": 429, "retry_after_s": options.RETRY_AFTER_S}
    assert got["graceful_shutdown_timeout_s"] == 20 + options.LIFESPAN_MARGIN_S
    assert got["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.0}


def test_autoscaling_when_a_maximum_is_set() -> None:
    got = options.deployment_options(settings(ray_min_replicas=1, ray_max_replicas=4, ray_target_ongoing_requests=8,
                                              ray_upscale_delay_s=5, ray_downscale_delay_s=60,
                                              ray_max_ongoing_requests=32, ray_max_queued_requests=-1), 0)
    assert "num_replicas" not in got
    assert got["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8,
                                         "upscale_delay_s": 5, "downscale_delay_s": 60}
    assert got["max_ongoing_requests"] == 32 and got["max_queued_requests"] == -1


@pytest.mark.parametrize(("device", "cluster_gpus", "gpus", "replica_device"), [
    ("auto", 0, 0.0, "cpu"), ("auto", 4, 1.0, "cuda"), ("cuda", 2, 1.0, "cuda"), ("cpu", 8, 0.0, "cpu")])
def test_a_gpu_per_replica_when_the_cluster_has_them(device: str, cluster_gpus: float, gpus: float,
                                                     replica_device: str) -> None:
    s = settings(device=device)
    assert options.deployment_options(s, cluster_gpus)["ray_actor_options"]["num_gpus"] == gpus
    assert options.replica_settings(s, cluster_gpus)["device"] == replica_device


def test_replicas_get_the_service_settings_only(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(CATALOG.parent.parent)
    values = options.replica_settings(settings(models="models/catalog.toml", api_keys="k1,k2", ray_replicas=2,
                                               host="127.0.0.1", port=9000), 0)
    assert values["models"] == str(CATALOG)  # absolute: a replica's working folder is Ray's
    assert values["api_keys"] == ["k1", "k2"]
    assert not [k for k in values if k.startswith("ray_") or k in ("host", "port")]
    assert Settings(**values).model_dump(mode="json") == {**settings().model_dump(mode="json"), **values,
                                                          "host": "0.0.0.0", "port": 8000}


@pytest.mark.parametrize(("values", "message"), [
    ({"ray_min_replicas": 3, "ray_max_replicas": 2}, "RAY_MAX_REPLICAS"),
    ({"ray_target_ongoing_requests": 200}, "RAY_TARGET_ONGOING_REQUESTS"),
    ({"max_batch_size": 4}, "RAY_TARGET_ONGOING_REQUESTS (16) must not exceed"),
    ({"device": "cuda:1"}, "use DEVICE=cuda"),
])
def test_settings_that_cannot_make_a_deployment(values: dict[str, object], message: str) -> None:
    with pytest.raises(options.ClusterConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        options.deployment_options(settings(**values), 4)


def test_a_gpu_device_needs_gpus_in_the_cluster() -> None:
    with pytest.raises(options.ClusterConfigError, match="no GPU"):
        options.deployment_options(settings(device="cuda"), 0)


def test_empty_ray_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAY_ADDRESS", "RAY_MAX_REPLICAS", "RAY_MAX_ONGOING_REQUESTS", "RAY_REPLICA_GPUS"):
        monkeypatch.setenv(name, "")
    s = Settings()
    assert (s.ray_address, s.ray_max_replicas, s.ray_max_ongoing_requests, s.ray_replica_gpus) == (None,) * 4
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert Settings().ray_address == "127.0.0.1:6379"
