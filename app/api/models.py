"""Model discovery: the catalog as clients see it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.deps import Authorized, ServiceDep
from app.api.middleware import LABELS_KEY
from app.api.problems import problem_responses
from app.api.responses import JSONResponse
from app.schemas import ModelInfo, ModelList

router = APIRouter(tags=["models"], dependencies=[Authorized],
                   responses=problem_responses(401, 403, 503))


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request, service: ServiceDep) -> Response:
    request.scope[LABELS_KEY]["route"] = "models"
    registry = service.registry
    ready = registry.state == "ready"
    infos = [entry.info.model_copy(update={"ready": ready}) for entry in registry.models.values()]
    return JSONResponse(ModelList(models=infos))


@router.get("/v1/models/{model}", response_model=ModelInfo, responses=problem_responses(404))
async def get_model(model: str, request: Request, service: ServiceDep) -> Response:
    request.scope[LABELS_KEY].update(route="model", model=model)
    registry = service.registry
    return JSONResponse(registry.get(model).info.model_copy(update={"ready": registry.state == "ready"}))
