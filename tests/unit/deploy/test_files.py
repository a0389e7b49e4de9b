"""deploy/ray-serve.yaml and deploy/kuberay-rayservice.yaml: valid Serve configs (Ray's own schema)
whose import path builds the service's deployment, with the options the code derives."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from app.config import Settings
from app.deploy import options

ROOT = Path(__file__).resolve().parents[3]


def _serve_configs() -> dict[str, dict[str, Any]]:
    kuberay = yaml.safe_load((ROOT / "deploy" / "kuberay-rayservice.yaml").read_text())
    assert kuberay["apiVersion"] == "ray.io/v1" and kuberay["kind"] == "RayService"
    return {"ray-serve.yaml": yaml.safe_load((ROOT / "deploy" / "ray-serve.yaml").read_text()),
            "kuberay-rayservice.yaml": yaml.safe_load(kuberay["spec"]["serveConfigV2"])}


@pytest.mark.parametrize("name", sorted(_serve_configs()))
def test_serve_config_builds_the_service(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _serve_configs()[name]
    ServeDeploySchema.model_validate(config)
    env = config["controller_options"]["runtime_env"]["env_vars"]
    assert env == options.proxy_environment()
    (app,) = config["applications"]
    assert app["name"] == options.APPLICATION and app["route_prefix"] == "/"
    assert set(app["args"]) <= set(Settings.model_fields)
    module, attribute = app["import_path"].split(":")
    builder = getattr(importlib.import_module(module), attribute)
    monkeypatch.chdir(ROOT)
    args = {**app["args"], "models": "models/catalog.toml"}  # the image's /models is this repository's
    deployment = builder(args)._bound_deployment
    want = options.deployment_options(Settings(**args), 0)
    config_of = deployment._deployment_config
    assert deployment.name == want["name"]
    for key in ("max_ongoing_requests", "max_queued_requests", "graceful_shutdown_timeout_s"):
        assert getattr(config_of, key) == want[key], key
    assert config_of.backpressure_config.status_code == 429
    if "autoscaling_config" in want:
        assert config_of.autoscaling_config.max_replicas == want["autoscaling_config"]["max_replicas"]
    else:
        assert config_of.num_replicas == want["num_replicas"]
    assert deployment.ray_actor_options["num_cpus"] == want["ray_actor_options"]["num_cpus"]
    (values,) = deployment._replica_config.init_args
    assert values == options.replica_settings(Settings(**args), 0)


@pytest.mark.anyio
@pytest.mark.parametrize(("state", "healthy"), [("ready", True), ("draining", True), ("starting", False)])
async def test_replica_health_follows_the_registry(state: str, healthy: bool) -> None:
    from types import SimpleNamespace

    from app.deploy.ray import ExplainServe

    replica = SimpleNamespace(_app=SimpleNamespace(state=SimpleNamespace(
        service=SimpleNamespace(registry=SimpleNamespace(state=state)))))
    if healthy:
        await ExplainServe.check_health(replica)  # type: ignore[arg-type]
    else:
        with pytest.raises(RuntimeError, match=state):
            await ExplainServe.check_health(replica)  # type: ignore[arg-type]
