"""Explain on the three paths of API.md; `Accept: image/png` answers the overlay itself."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.codecs import header_timeout, parse_request, wants_png
from app.api.deps import check_key
from app.api.disconnect import cancel_on_disconnect
from app.api.middleware import LABELS_KEY
from app.api.openapi import request_body
from app.api.problems import problem_responses
from app.api.responses import JSONResponse
from app.errors import InvalidInput
from app.runtime.service import Service
from app.schemas import ExplainRequest, ExplainResponse

# No dependency injection on these hot routes (FastAPI's solver costs more than the work it does
# here): the service comes from the app state and the API key is checked first, inline.
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
    service: Service = request.app.state.service
    labels = request.scope[LABELS_KEY]
    labels.update(route="explain", model=model)
    check_key(service.settings, request)
    deadline = service.deadline(header_timeout(request))
    body, files = await parse_request(request, ExplainRequest, service.settings.max_body_bytes)
    if in_body:
        if not body.model:
            raise InvalidInput("POST /explain needs \"model\" in the body")
        model = body.model
        labels["model"] = model
    labels["method"] = body.method or ""
    png = wants_png(request)
    answer = await cancel_on_disconnect(request, service.explain(model, body, deadline, files, want_png=png))
    labels["method"] = answer.body["method"]
    if png and answer.png is not None:
        return Response(answer.png, media_type="image/png")
    return JSONResponse(answer.body)


@router.post("/v1/models/{model}/explain", **_DOC)  # type: ignore[arg-type]
async def explain(model: str, request: Request) -> Response:
    return await _explain(model, request, in_body=False)


@router.post("/v1/models/{model}:explain", **_DOC)  # type: ignore[arg-type]
async def explain_kserve(model: str, request: Request) -> Response:
    return await _explain(model, request, in_body=False)


@router.post("/explain", **_DOC)  # type: ignore[arg-type]
async def explain_any(request: Request) -> Response:
    return await _explain("", request, in_body=True)
