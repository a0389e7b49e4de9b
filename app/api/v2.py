"""The REST side of the Open Inference Protocol (KServe v2, Triton) for predictions: health,
server and model metadata, and inference. Explanations stay on the v1 routes (the protocol
has no explain verb).

Batching, limits, deadlines, API keys and metrics are the v1 routes': the tensors become the
rows `Service.decode` takes and go through the same batcher.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from numpy.typing import NDArray
from starlette.responses import Response

from app.api.auth import check_key
from app.api.bodies import BodyLimits, read_body
from app.api.codecs import header_timeout
from app.api.deps import body_limits, get_service
from app.api.disconnect import cancel_on_disconnect
from app.api.middleware import LABELS_KEY
from app.api.openapi import TIMEOUT_HEADER
from app.api.responses import JSONResponse
from app.api.v2_codec import EXTENSIONS, VERSION, Signature, encode_answer, model_inputs, requested_output
from app.api.v2_errors import error_responses
from app.api.v2_tensors import HEADER_LENGTH, parse_body
from app.context import request_id_var
from app.errors import InvalidInput, ModelNotFound, NotReady, UnsupportedMedia, quoted
from app.runtime.model_entry import ModelEntry
from app.runtime.service import Service
from app.schemas_v2 import (
    InferenceResponse,
    ModelMetadata,
    ModelNames,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
)

router = APIRouter(tags=["open inference protocol (v2)"])

_MODEL_ERRORS = error_responses(401, 403, 404, 503)
_LENGTH_HEADER = {
    "name": "Inference-Header-Content-Length", "in": "header", "required": False,
    "description": "Binary tensor data extension: the length of the JSON object that starts the body",
    "schema": {"type": "integer", "minimum": 0},
}
_INFER_DOC: dict[str, Any] = {
    "parameters": [TIMEOUT_HEADER, _LENGTH_HEADER],
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}, "description":
                                     "The JSON object, then the inputs' binary data"},
    }},
}
_ACCEPTED_TYPES = ("application/json", "application/octet-stream")


def _label(request: Request, route: str, model: str = "") -> None:
    request.scope[LABELS_KEY].update(route=route, model=model)


def _signature(entry: ModelEntry) -> Signature:
    spec = entry.spec
    labels = entry.primary.labels
    width = entry.primary.out_width
    classes = 1 if spec.task == "regression" else len(labels) if labels else max(width, 2)
    return Signature(spec.name, spec.task, entry.kind.tensor_inputs(spec), classes, labels)


def _model(request: Request, route: str, model: str, version: str | None) -> tuple[Service, ModelEntry]:
    """Label, authorise, and find the model (404 unknown, 503 loading or draining) and version."""
    _label(request, route, model)
    service = get_service(request)
    check_key(service.settings, request)
    entry = service.registry.get(model)
    if version is not None and version != VERSION:
        raise ModelNotFound(f"model {quoted(model)} has no version {quoted(version)} (versions: {VERSION})")
    return service, entry


@router.get("/v2", response_model=ServerMetadata)
async def server_metadata(request: Request) -> Response:
    _label(request, "v2_server")
    return JSONResponse({"name": "explainserve", "version": request.app.version, "extensions": EXTENSIONS})


@router.get("/v2/health/live", response_model=ServerLive)
async def server_live(request: Request) -> Response:
    _label(request, "v2_health")
    return JSONResponse({"live": True})


@router.get("/v2/health/ready", response_model=ServerReady, responses=error_responses(503))
async def server_ready(request: Request) -> Response:
    _label(request, "v2_health")
    state = get_service(request).registry.state
    if state != "ready":
        raise NotReady(f"the service is {state}", headers={"Retry-After": "5"})
    return JSONResponse({"ready": True})


@router.get("/v2/models", response_model=ModelNames, responses=error_responses(401, 403))
async def model_names(request: Request) -> Response:
    _label(request, "v2_models")
    service = get_service(request)
    check_key(service.settings, request)
    return JSONResponse({"models": list(service.registry.models)})


async def _metadata(request: Request, model: str, version: str | None) -> Response:
    _, entry = _model(request, "v2_model", model, version)
    return JSONResponse(_signature(entry).metadata())


@router.get("/v2/models/{model}", response_model=ModelMetadata, responses=_MODEL_ERRORS)
async def model_metadata(model: str, request: Request) -> Response:
    return await _metadata(request, model, None)


@router.get("/v2/models/{model}/versions/{version}", response_model=ModelMetadata, responses=_MODEL_ERRORS)
async def model_version_metadata(model: str, version: str, request: Request) -> Response:
    return await _metadata(request, model, version)


async def _ready(request: Request, model: str, version: str | None) -> Response:
    _model(request, "v2_model_ready", model, version)
    return JSONResponse({"name": model, "ready": True})


@router.get("/v2/models/{model}/ready", response_model=ModelReady, responses=_MODEL_ERRORS)
async def model_ready(model: str, request: Request) -> Response:
    return await _ready(request, model, None)


@router.get("/v2/models/{model}/versions/{version}/ready", response_model=ModelReady, responses=_MODEL_ERRORS)
async def model_version_ready(model: str, version: str, request: Request) -> Response:
    return await _ready(request, model, version)


async def _infer(request: Request, model: str, version: str | None) -> Response:
    service, entry = _model(request, "v2_infer", model, version)
    settings = service.settings
    deadline = service.deadline(header_timeout(request))
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in _ACCEPTED_TYPES and not content_type.endswith("+json"):
        raise UnsupportedMedia(f"unsupported content type {quoted(content_type)}: send application/json, or "
                               "application/octet-stream with binary tensor data")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMedia(f"unsupported content encoding {quoted(encoding)}: send the body uncompressed")
    limits = _body_limits(service, entry)
    body = parse_body(await read_body(request, limits), request.headers.get(HEADER_LENGTH), limits.max_values)
    infer = body.request
    if infer.model_name is not None and infer.model_name != model:
        raise InvalidInput(f"model_name {quoted(infer.model_name)} in the body is not the model of the path, "
                           f"{quoted(model)}")
    deadline = min(deadline, _parameter_deadline(service, infer.parameters or {}))
    signature = _signature(entry)
    how = requested_output(infer, signature)
    rows = model_inputs(body, signature, settings.max_instances, settings.max_image_pixels)

    async def compute() -> NDArray[np.float32]:
        return await service.scores(entry, deadline, "v2_infer", rows.instances, rows.files, rows.pixels)

    scores = await cancel_on_disconnect(request, compute())
    response_id = infer.id if infer.id is not None else request_id_var.get()
    answer = encode_answer(signature, how, response_id, scores)
    return Response(answer.body, media_type=answer.media_type, headers=answer.headers)


def _body_limits(service: Service, entry: ModelEntry) -> BodyLimits:
    """v1's body limits; JSON tensor data may hold MAX_INSTANCES rows of the model's own input
    (images: the pixels it sees; larger ones come as binary tensor data)."""
    limits = body_limits(service)
    row = math.prod(entry.spec.input_shape)
    values = BodyLimits.values_for(service.settings.max_instances, row)
    return replace(limits, max_values=max(limits.max_values, values))


def _parameter_deadline(service: Service, parameters: dict[str, Any]) -> float:
    """Triton's `timeout` request parameter, in microseconds (0 or absent: none)."""
    timeout = parameters.get("timeout", 0)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise InvalidInput("parameter timeout must be a whole number of microseconds")
    return service.deadline(timeout / 1e6 if timeout else None)


_INFER = {
    "response_model": InferenceResponse,
    "openapi_extra": _INFER_DOC,
    "responses": {
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
              "description": "The inference response; with binary outputs, followed by their data",
              "headers": {"Inference-Header-Content-Length": {
                  "description": "With binary outputs: the length of the JSON object",
                  "schema": {"type": "integer"}}}},
        **error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503, 504),
    },
}


@router.post("/v2/models/{model}/infer", **_INFER)  # type: ignore[arg-type]
async def infer(model: str, request: Request) -> Response:
    return await _infer(request, model, None)


@router.post("/v2/models/{model}/versions/{version}/infer", **_INFER)  # type: ignore[arg-type]
async def infer_version(model: str, version: str, request: Request) -> Response:
    return await _infer(request, model, version)
