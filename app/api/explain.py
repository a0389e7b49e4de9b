"""Explain on the three paths of API.md; `Accept: image/png` answers the overlay itself."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.codecs import wants_png
from app.api.deps import open_model_call
from app.api.disconnect import cancel_on_disconnect
from app.api.openapi import request_body
from app.api.problems import problem_responses
from app.api.responses import JSONResponse
from app.schemas import ExplainRequest, ExplainResponse

# No dependency injection on these hot routes: see `open_model_call`.
router = APIRouter(tags=["explain"])

_DOC = {
    "response_model": ExplainResponse,
    "openapi_extra": request_body(ExplainRequest),
    "responses": {
        200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
              "description": "JSON explanations, or the overlay PNG with Accept: image/png"},
        **problem_responses(400, 401, 403, 404, 406, 413, 415, 422, 429, 503, 504),
    },
}


async def _explain(model: str, request: Request, in_body: bool) -> Response:
    call = await open_model_call(request, "explain", ExplainRequest, model, in_body)
    body, labels = call.body, call.labels
    labels["method"] = body.method or ""
    png = wants_png(request)
    answer = await cancel_on_disconnect(
        request, call.service.explain(call.model, body, call.deadline, call.files, want_png=png))
    labels["method"] = answer.response.method
    if png and answer.png is not None:
        return Response(answer.png, media_type="image/png")
    return JSONResponse(answer.response)


@router.post("/v1/models/{model}/explain", **_DOC)  # type: ignore[arg-type]
async def explain(model: str, request: Request) -> Response:
    return await _explain(model, request, in_body=False)


@router.post("/v1/models/{model}:explain", **_DOC)  # type: ignore[arg-type]
async def explain_kserve(model: str, request: Request) -> Response:
    return await _explain(model, request, in_body=False)


@router.post("/explain", **_DOC)  # type: ignore[arg-type]
async def explain_any(request: Request) -> Response:
    return await _explain("", request, in_body=True)
