"""`explainserve serve --ray`: deploy the service on a Ray cluster and serve until SIGTERM or SIGINT.

Joins the cluster at RAY_ADDRESS (or starts a local one), starts Serve's HTTP proxies on
HOST:PORT, deploys the application and waits. On SIGTERM or SIGINT the application is deleted
gracefully: Serve stops routing to the replicas, each finishes its accepted requests (within
SHUTDOWN_GRACE_S) and runs the app's shutdown; a local cluster is then stopped too.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import ray
from ray import serve

from app.config import Settings
from app.deploy import options
from app.deploy.ray import build

logger = logging.getLogger(__name__)


def run(settings: Settings) -> None:
    """Raises `options.ClusterConfigError` for settings that cannot make a deployment."""
    options.check(settings)
    local = settings.ray_address is None
    ray.init(address=settings.ray_address, logging_level=logging.WARNING)
    try:
        application = build(settings)
        serve.start(http_options={"host": settings.host, "port": settings.port},
                    proxy_location=settings.ray_proxy_location,
                    controller_options={"runtime_env": {"env_vars": options.proxy_environment()}})
        stop = threading.Event()

        def on_signal(sig: int, frame: FrameType | None) -> None:
            logger.info("signal %s: deleting the application (replicas drain first)", sig)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        serve.run(application, name=options.APPLICATION, route_prefix="/", blocking=False)
        logger.info("serving on http://%s:%d (Ray cluster %s)", settings.host, settings.port,
                    settings.ray_address or "started here")
        stop.wait()
        serve.delete(options.APPLICATION)
        logger.info("application deleted")
    finally:
        if local:
            serve.shutdown()
        ray.shutdown()
