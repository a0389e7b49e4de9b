"""Every error becomes application/problem+json (RFC 9457), mapped here and nowhere else."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.errors import ErrorItem, InternalError, InvalidInput, ServiceError, listing

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_body(body: dict[str, Any]) -> bytes:
    """JSON of any problem: text echoed from a client may hold lone surrogates, which UTF-8 cannot
    encode; they are written as \\u escapes then."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, ensure_ascii=True).encode("ascii")


def problem_response(error: ServiceError) -> Response:
    return Response(problem_body(error.problem()), status_code=error.status,
                    media_type=PROBLEM_MEDIA_TYPE, headers=dict(error.headers))


def _http_problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return Response(problem_body(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE,
                    headers=headers)


def validation_error(errors: list[dict[str, Any]], prefix: tuple[str | int, ...] = ()) -> InvalidInput:
    """Pydantic errors as one 422 locating each."""
    items = [ErrorItem((*prefix, *e["loc"]), str(e["msg"])) for e in errors] or [ErrorItem(prefix, "invalid")]
    return listing(InvalidInput, [(f"{'.'.join(str(p) for p in item.loc) or 'body'}: {item.msg}", item)
                                  for item in items])


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    if exc.status >= 500 and exc.status not in (503, 504):
        logger.error("server fault on %s %s: %s", request.method, request.url.path, exc.detail)
    return problem_response(exc)


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": tuple(e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in exc.errors()]
    return problem_response(validation_error(errors))


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return _http_problem(exc.status_code, str(exc.detail), dict(exc.headers or {}))


async def _unhandled(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(InternalError("internal server error"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unhandled)


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying",
                                 "schema": {"type": "integer", "minimum": 1}}}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for problem+json answers (429 and 503 carry Retry-After)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for s in statuses:
        responses[s] = {"description": HTTPStatus(s).phrase, "content": _problem_content()}
        if s in (429, 503):
            responses[s]["headers"] = _RETRY_AFTER
    return responses
