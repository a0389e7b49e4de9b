"""`Settings` -> the Ray Serve options of the service's deployment, and what each replica receives.

Plain data, no Ray import. The limits follow the service's own queue: a replica holds up to
`max_ongoing_requests` requests (by default two full batches, so the next batch forms while one
runs; its batcher still answers 429 beyond MAX_QUEUE work rows), a Serve proxy holds up to
`max_queued_requests` more while every replica is full and answers 429 with `Retry-After` beyond
them, as the batcher does. Replicas drain within SHUTDOWN_GRACE_S, then get a few seconds for
the app's own shutdown before Serve stops them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import Settings

APPLICATION = "explainserve"
"""The Serve application's name (`serve status`, `serve.delete`)."""
DEPLOYMENT = "explainserve"
RETRY_AFTER_S = 1
"""`Retry-After` of a request the proxies refuse, the same as the batcher's for a full queue."""
LIFESPAN_MARGIN_S = 5.0
"""Serve's graceful shutdown: SHUTDOWN_GRACE_S for requests, then this long for the app's lifespan."""
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "app.deploy.proxy:middlewares"
"""Serve's proxies import this (set in the controller's environment, which they inherit)."""

_PROXY_ONLY = {"host", "port"}


class ClusterConfigError(ValueError):
    """Settings that cannot make a deployment; `explainserve serve --ray` prints it and exits 2."""


def max_ongoing_requests(settings: Settings) -> int:
    return settings.ray_max_ongoing_requests or 2 * settings.max_batch_size


def replica_gpus(settings: Settings, cluster_gpus: float) -> float:
    """GPUs per replica: RAY_REPLICA_GPUS, else one GPU each when the cluster has any and DEVICE allows."""
    if settings.ray_replica_gpus is not None:
        return settings.ray_replica_gpus
    return 1.0 if settings.device != "cpu" and cluster_gpus >= 1 else 0.0


def check(settings: Settings) -> None:
    """What can be told before joining the cluster."""
    if settings.ray_max_replicas is not None and settings.ray_max_replicas < settings.ray_min_replicas:
        raise ClusterConfigError("RAY_MAX_REPLICAS must be at least RAY_MIN_REPLICAS")
    if settings.ray_target_ongoing_requests > max_ongoing_requests(settings):
        raise ClusterConfigError(
            f"RAY_TARGET_ONGOING_REQUESTS ({settings.ray_target_ongoing_requests:g}) must not exceed the "
            f"requests a replica holds (RAY_MAX_ONGOING_REQUESTS, {max_ongoing_requests(settings)})")
    if settings.device.startswith("cuda:"):
        raise ClusterConfigError(f"DEVICE={settings.device}: on Ray each replica owns its GPUs; use DEVICE=cuda")


def check_devices(settings: Settings, cluster_gpus: float) -> None:
    gpus = replica_gpus(settings, cluster_gpus)
    if settings.device.startswith("cuda") and gpus == 0:
        raise ClusterConfigError(f"DEVICE={settings.device}, but the cluster has no GPU for the replicas")


def replica_settings(settings: Settings, cluster_gpus: float) -> dict[str, Any]:
    """The settings each replica builds its app from: the service's own (not Ray's, not the
    proxies' host and port), the catalog path made absolute, the device the replica owns."""
    values = settings.model_dump(mode="json")
    values = {k: v for k, v in values.items() if not k.startswith("ray_") and k not in _PROXY_ONLY}
    catalog = Path(settings.models)
    if not catalog.is_absolute() and catalog.exists():
        values["models"] = str(catalog.resolve())
    values["device"] = "cuda" if replica_gpus(settings, cluster_gpus) > 0 else "cpu"
    return values


def autoscaling(settings: Settings) -> dict[str, Any] | None:
    if settings.ray_max_replicas is None:
        return None
    return {
        "min_replicas": settings.ray_min_replicas,
        "max_replicas": settings.ray_max_replicas,
        "target_ongoing_requests": settings.ray_target_ongoing_requests,
        "upscale_delay_s": settings.ray_upscale_delay_s,
        "downscale_delay_s": settings.ray_downscale_delay_s,
    }


def deployment_options(settings: Settings, cluster_gpus: float) -> dict[str, Any]:
    """Keyword arguments of `Deployment.options` for the service's deployment."""
    check(settings)
    check_devices(settings, cluster_gpus)
    options: dict[str, Any] = {
        "name": DEPLOYMENT,
        "ray_actor_options": {"num_cpus": settings.ray_replica_cpus,
                              "num_gpus": replica_gpus(settings, cluster_gpus)},
        "max_ongoing_requests": max_ongoing_requests(settings),
        "max_queued_requests": settings.ray_max_queued_requests,
        "backpressure_config": {"status_code": 429, "retry_after_s": RETRY_AFTER_S},
        "graceful_shutdown_timeout_s": settings.shutdown_grace_s + LIFESPAN_MARGIN_S,
        "graceful_shutdown_wait_loop_s": 0.5,
    }
    scaling = autoscaling(settings)
    if scaling is None:
        options["num_replicas"] = settings.ray_replicas
    else:
        options["autoscaling_config"] = scaling
    return options


def proxy_environment() -> dict[str, str]:
    """The Serve controller's (hence its proxies') environment: the proxies load `app.deploy.proxy`."""
    return {PROXY_CALLBACK_ENV: PROXY_CALLBACK}
