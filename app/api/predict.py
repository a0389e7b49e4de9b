"""Predict on the three paths of API.md (REST, KServe V1, and model-in-body)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.codecs import header_timeout, parse_request
from app.api.deps import check_key
from app.api.disconnect import cancel_on_disconnect
from app.api.middleware import LABELS_KEY
from app.api.openapi import request_body
from app.api.problems import problem_responses
from app.api.responses import JSONResponse
from app.errors import InvalidInput
from app.runtime.service import Service
from app.schemas import PredictRequest, PredictResponse

# No dependency injection on these hot routes (FastAPI's solver costs more than the work it does
# here): the service comes from the app state and the API key is checked first, inline.
router = APIRouter(tags=["predict"])

_DOC = {
    "response_model": PredictResponse,
    "openapi_extra": request_body(PredictRequest),
    "responses": problem_responses(400, 401, 403, 404, 413, 415, 422, 429, 503, 504),
}


async def _predict(model: str, request: Request, in_body: bool) -> Response:
    service: Service = request.app.state.service
    labels = request.scope[LABELS_KEY]
    labels.update(route="predict", model=model)
    check_key(service.settings, request)
    deadline = service.deadline(header_timeout(request))
    body, files = await parse_request(request, PredictRequest, service.settings.max_body_bytes)
    if in_body:
        if not body.model:
            raise InvalidInput("POST /predict needs \"model\" in the body")
        model = body.model
        labels["model"] = model
    answer = await cancel_on_disconnect(request, service.predict(model, body.instances, body.top_k, deadline, files))
    return JSONResponse(answer)


@router.post("/v1/models/{model}/predict", **_DOC)  # type: ignore[arg-type]
async def predict(model: str, request: Request) -> Response:
    return await _predict(model, request, in_body=False)


@router.post("/v1/models/{model}:predict", **_DOC)  # type: ignore[arg-type]
async def predict_kserve(model: str, request: Request) -> Response:
    return await _predict(model, request, in_body=False)


@router.post("/predict", **_DOC)  # type: ignore[arg-type]
async def predict_any(request: Request) -> Response:
    return await _predict("", request, in_body=True)
