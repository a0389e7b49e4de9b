"""Predict on the three paths of API.md (REST, KServe V1, and model-in-body)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.deps import open_model_call
from app.api.disconnect import cancel_on_disconnect
from app.api.openapi import request_body
from app.api.problems import problem_responses
from app.api.responses import JSONResponse
from app.schemas import PredictRequest, PredictResponse

# No dependency injection on these hot routes: see `open_model_call`.
router = APIRouter(tags=["predict"])

_DOC = {
    "response_model": PredictResponse,
    "openapi_extra": request_body(PredictRequest),
    "responses": problem_responses(400, 401, 403, 404, 413, 415, 422, 429, 503, 504),
}


async def _predict(model: str, request: Request, in_body: bool) -> Response:
    call = await open_model_call(request, "predict", PredictRequest, model, in_body)
    answer = await cancel_on_disconnect(request, call.service.predict(
        call.model, call.body.instances, call.body.top_k, call.deadline, call.files))
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
