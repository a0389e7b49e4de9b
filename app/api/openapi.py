"""The OpenAPI description: request bodies of the routes that parse their own (JSON or
multipart), problem+json for every error, and the API-key schemes when keys are configured."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app import examples
from app.api.v2_errors import V2_ERROR_CONTENT, is_v2
from app.config import Settings
from app.schemas import ExplainRequest, PredictRequest, Problem
from app.schemas_v2 import InferenceRequest
from app.types import COLORMAPS, METHOD_NAMES, SIGNS

_REF = "#/components/schemas/{model}"
_PROBLEM_REF = {"$ref": _REF.format(model="Problem")}
_MULTIPART = {
    "type": "object",
    "description": "For curl: image files as `file` parts, the other fields as form fields.",
    "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "Image files (PNG, JPEG, WebP), one instance each"},
        "instances": {"type": "string", "description": "JSON list of instances (instead of, or before, files)"},
        "model": {"type": "string", "description": "Model name (POST /predict and /explain only)"},
        "method": {"type": "string", "enum": list(METHOD_NAMES)},
        "target": {"type": "string", "description": "A class index, a label, or a JSON list"},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 1000},
        "params": {"type": "string", "description": 'Method parameters as JSON, e.g. {"n_steps": 16}'},
        "outputs": {"type": "string", "description": "Comma-separated, e.g. overlay,heatmap"},
        "render": {"type": "string", "description": "Render options as JSON, e.g. "
                   f'{{"colormap": "inferno", "sign": "all"}}; colormap one of {", ".join(COLORMAPS)}; '
                   f'sign one of {", ".join(SIGNS)}'},
    },
}
TIMEOUT_HEADER = {
    "name": "X-Request-Timeout", "in": "header", "required": False,
    "description": "Deadline in seconds (at most REQUEST_TIMEOUT_S); past it the answer is a 504",
    "schema": {"type": "number", "exclusiveMinimum": 0},
}
_REQUEST_EXAMPLES = {
    PredictRequest: {"tabular": examples.PREDICT_REQUEST, "image": examples.PREDICT_IMAGE_REQUEST},
    ExplainRequest: {"tabular": examples.EXPLAIN_REQUEST, "image": examples.EXPLAIN_IMAGE_REQUEST},
}
_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "basic": {"type": "http", "scheme": "basic", "description": "Any user name, the key as password"},
}
PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/v2", "/v2/health/live", "/v2/health/ready"})
"""Answer without a key whatever the configuration (liveness and readiness probes)."""


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON and multipart bodies of a model route, and its X-Request-Timeout header."""
    named = _REQUEST_EXAMPLES.get(model, {})
    return {
        "parameters": [TIMEOUT_HEADER],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)},
                                 "examples": {k: {"value": v} for k, v in named.items()}},
            "multipart/form-data": {"schema": _MULTIPART},
        }},
    }


def _problem_content() -> dict[str, Any]:
    return {"application/problem+json": {"schema": _PROBLEM_REF}}


def _errors_as_problems(schema: dict[str, Any]) -> None:
    """FastAPI documents its own 422 body (HTTPValidationError); ours is problem+json (on /v2, the
    Open Inference Protocol's error body)."""
    for name, path in schema.get("paths", {}).items():
        for operation in path.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {})
            if "application/json" in content and "HTTPValidationError" in str(content["application/json"]):
                responses["422"]["content"] = V2_ERROR_CONTENT if is_v2(name) else _problem_content()
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def _secured(schema: dict[str, Any]) -> None:
    schema["components"]["securitySchemes"] = _SECURITY_SCHEMES
    schema["security"] = [{name: []} for name in _SECURITY_SCHEMES]
    for path, operations in schema["paths"].items():
        if path in PUBLIC_PATHS:
            for operation in operations.values():
                operation["security"] = []


def build(app: FastAPI, settings: Settings) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (PredictRequest, ExplainRequest, Problem, InferenceRequest):
        definition = model.model_json_schema(ref_template=_REF)
        components.update(definition.pop("$defs", {}))
        components[model.__name__] = definition
    _errors_as_problems(schema)
    if settings.api_keys:
        _secured(schema)
    return schema


def install(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
