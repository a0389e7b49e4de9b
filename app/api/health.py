"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import RedirectResponse, Response

from app.api.auth import BROWSER_CHALLENGE, check_key, key_is_valid, presented_key
from app.api.deps import ServiceDep, SettingsDep
from app.api.middleware import LABELS_KEY
from app.api.problems import problem_body, problem_responses
from app.api.responses import JSONResponse
from app.config import Settings
from app.errors import NotReady
from app.schemas import Alive, Health, Readiness

router = APIRouter(tags=["health"])


def _prefers_html(request: Request) -> bool:
    """A browser navigating here: `text/html` accepted before (or without) JSON."""
    accept = request.headers.get("accept", "").lower()
    types = [part.split(";")[0].strip() for part in accept.split(",")]
    if "text/html" not in types:
        return False
    return "application/json" not in types or types.index("text/html") < types.index("application/json")


@router.get("/", response_model=Alive, responses={
    307: {"description": "Browsers (`Accept: text/html`) are sent to the built-in page at /ui"}})
async def root(request: Request) -> Response:
    """KServe's liveness convention for API clients; browsers go to the page at `/ui`."""
    request.scope[LABELS_KEY]["route"] = "root"
    if _prefers_html(request):
        return RedirectResponse("/ui", status_code=307)
    return JSONResponse({"status": "alive"})


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    return JSONResponse({"status": "ok"})


def _may_see_models(settings: Settings, request: Request) -> bool:
    """Model names are for callers with a key, when keys are configured (probes need none)."""
    if not settings.api_keys:
        return True
    key = presented_key(request)
    return key is not None and key_is_valid(settings, key)


@router.get("/readyz", response_model=Readiness, responses=problem_responses(503))
async def readyz(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    """Ready once every model is loaded and warm; 503 while starting or draining. With API keys
    configured, anonymous callers get the status without the model names."""
    request.scope[LABELS_KEY]["route"] = "readyz"
    registry = service.registry
    models = {"models": registry.statuses()} if _may_see_models(settings, request) else {}
    if registry.state != "ready":
        what = "starting" if registry.state == "starting" else "draining"
        error = NotReady(f"the service is {what}", headers={"Retry-After": "5"})
        return Response(problem_body(error.problem() | models), status_code=503,
                        media_type="application/problem+json", headers=error.headers)
    return JSONResponse({"status": "ready"} | models)


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"},
    **problem_responses(401, 403)})
async def metrics(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    if not settings.metrics_public:
        check_key(settings, request, BROWSER_CHALLENGE)
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
