"""The service as a Ray Serve deployment: each replica is the whole service for one device.

A replica builds `create_app(settings)` (routes, batcher, workers, host-work pool) behind
Serve's FastAPI ingress; Serve runs the app's lifespan in the replica (models load and warm up
before the replica takes traffic; on shutdown Serve first waits for the replica's ongoing
requests, then the lifespan drains the queues). The replica is healthy while its models are
ready, and answers carry `X-Replica`, the replica's id in Ray's logs and `serve status`.

`build(settings)` makes the application; `app_builder` is the import path for Serve config
files (`serve run deploy/ray-serve.yaml`).
"""

from __future__ import annotations

from typing import Any

import ray
from ray import serve
from ray.serve import Application
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.deploy import options

REPLICA_HEADER = b"x-replica"


class ReplicaHeader:
    """Adds `X-Replica: <replica id>` to every answer of this replica."""

    def __init__(self, app: ASGIApp, replica: str):
        self.app = app
        self.header = (REPLICA_HEADER, replica.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, tagged)


@serve.ingress()
class ExplainServe:
    """One replica: the service's app over `values` (see `options.replica_settings`)."""

    def __init__(self, values: dict[str, Any]):
        self._settings = Settings(**values)
        self._app: Any = None

    def __serve_build_asgi_app__(self) -> ASGIApp:
        from app.main import create_app  # torch and the models: in the replica only

        app = create_app(self._settings)
        app.add_middleware(ReplicaHeader, replica=serve.get_replica_context().replica_id.unique_id)
        self._app = app
        return app

    async def check_health(self) -> None:
        """Serve replaces a replica whose check fails: healthy while every model is loaded (ready,
        or draining in the replica's own shutdown, when Serve no longer routes to it)."""
        state = self._app.state.service.registry.state if self._app is not None else "starting"
        if state not in ("ready", "draining"):
            raise RuntimeError(f"the replica's service is {state}")


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0)) if ray.is_initialized() else 0.0


def build(settings: Settings) -> Application:
    gpus = cluster_gpus()
    deployment = serve.deployment(**options.deployment_options(settings, gpus))(ExplainServe)
    return deployment.bind(options.replica_settings(settings, gpus))


def app_builder(args: dict[str, Any]) -> Application:
    """For Serve config files: `args` are settings by field name (`models`, `ray_replicas`, ...);
    the rest come from the environment, as for `python -m app`."""
    return build(Settings(**args))
