"""OpenAPI for routes that parse their own bodies (JSON or multipart): the request schemas
and the problem+json schema go into components."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app.schemas import ExplainRequest, PredictRequest, Problem

_REF = "#/components/schemas/{model}"
_MULTIPART = {
    "type": "object",
    "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "model": {"type": "string"}, "method": {"type": "string"}, "target": {"type": "string"},
        "top_k": {"type": "integer", "minimum": 1}, "params": {"type": "string", "description": "JSON"},
        "outputs": {"type": "string", "description": "comma-separated"},
    },
}


_TIMEOUT_HEADER = {
    "name": "X-Request-Timeout", "in": "header", "required": False,
    "description": "Deadline in seconds (at most REQUEST_TIMEOUT_S); past it the answer is a 504",
    "schema": {"type": "number", "exclusiveMinimum": 0},
}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON and multipart bodies of a model route, and its X-Request-Timeout header."""
    return {
        "parameters": [_TIMEOUT_HEADER],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}},
            "multipart/form-data": {"schema": _MULTIPART},
        }},
    }


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (PredictRequest, ExplainRequest, Problem):
                definition = model.model_json_schema(ref_template=_REF)
                components.update(definition.pop("$defs", {}))
                components[model.__name__] = definition
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
