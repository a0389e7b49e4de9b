"""Request decoding: JSON or multipart forms (for curl) into the request models, the `Accept`
negotiation and the timeout header. Bodies are read and parsed by `app.api.bodies`."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from app.api.bodies import BodyLimits, check_instance_count, parse_json, read_body
from app.api.problems import validation_error
from app.errors import BadRequest, UnsupportedMedia

M = TypeVar("M", bound=BaseModel)
_INTEGER = re.compile(r"-?[0-9]{1,18}")
"""A form field that is an integer: a few ASCII digits (`str.isdigit` also accepts '²', which int()
refuses, and int() refuses more than 4300 digits)."""


def _json_field(name: str, text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"form field '{name}' must be {what}: {exc}") from None
    except RecursionError:
        raise BadRequest(f"form field '{name}' must be {what}: nested too deeply") from None


def _form_value(name: str, raw: str) -> Any:
    if name in ("params", "render"):
        return _json_field(name, raw, "JSON") if raw.strip() else {}
    if name == "outputs":
        return [part.strip() for part in raw.split(",") if part.strip()]
    if name == "top_k":
        text = raw.strip()
        return int(text) if _INTEGER.fullmatch(text) else raw  # anything else: 422 from the schema
    if name == "target":
        text = raw.strip()
        if text in ("", "null"):
            return None
        if _INTEGER.fullmatch(text):
            return int(text)
        if text.startswith("["):
            return _json_field(name, text, "an index, a label or JSON")
        return text
    return raw


def _check_terminated(body: bytes, content_type: str) -> None:
    """python-multipart parses a body cut short without complaint: its closing boundary must be there."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise BadRequest("malformed multipart body: no boundary in the content type")
    if not body.rstrip(b"\r\n").endswith(b"--" + boundary.encode("latin-1") + b"--"):
        raise BadRequest("malformed multipart body: it ends before its closing boundary")


async def _parse_form(request: Request, body: bytes, limit: int) -> tuple[dict[str, Any], list[bytes]]:
    fields: dict[str, Any] = {}
    files: list[bytes] = []
    _check_terminated(body, request.headers.get("content-type", ""))
    try:
        form = await request.form(max_files=1000, max_fields=100, max_part_size=limit)
    except Exception as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != "file":
                    raise BadRequest(f"file parts must be named 'file', got '{name}'")
                files.append(await value.read())
            else:
                fields[name] = _form_value(name, value)
    finally:
        await form.close()
    return fields, files


async def parse_request(request: Request, model: type[M], limits: BodyLimits,
                        labels: dict[str, str] | None = None) -> tuple[M, list[bytes]]:
    """The request model from JSON or multipart, plus any uploaded file bytes. `labels` (the
    request's metric labels) gets the method named in the body, even when the body is invalid."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    files: list[bytes] = []
    if content_type == "multipart/form-data":
        body = await read_body(request, limits)
        data, files = await _parse_form(request, body, limits.max_bytes)
        if files:
            data.setdefault("instances", [])
        elif "instances" in data and isinstance(data["instances"], str):
            data["instances"] = parse_json(data["instances"].encode(), limits.max_values)
    elif content_type == "application/json" or content_type.endswith("+json"):
        data = parse_json(await read_body(request, limits), limits.max_values)
    else:
        raise UnsupportedMedia(
            f"unsupported content type '{content_type}': send application/json or multipart/form-data")
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    if labels is not None and isinstance(data.get("method"), str):
        labels["method"] = data["method"]
    check_instance_count(data, len(files), limits.max_instances)
    if files and not data.get("instances"):
        data["instances"] = []
        try:
            parsed = model.model_validate({**data, "instances": [{"b64": ""}]})
        except ValidationError as exc:
            raise validation_error(exc.errors(include_url=False)) from None  # type: ignore[arg-type]
        return parsed.model_copy(update={"instances": []}), files
    try:
        return model.model_validate(data), files
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None  # type: ignore[arg-type]


def wants_png(request: Request) -> bool:
    """`Accept: image/png` (and not JSON) asks for the overlay bytes themselves."""
    accept = request.headers.get("accept", "").lower()
    types = [part.split(";")[0].strip() for part in accept.split(",")]
    return "image/png" in types and "application/json" not in types


def header_timeout(request: Request) -> float | None:
    raw = request.headers.get("x-request-timeout")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest("X-Request-Timeout must be a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise BadRequest("X-Request-Timeout must be a positive number of seconds")
    return value
