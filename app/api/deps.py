"""Dependencies shared by routers: the service, settings, and the API-key check."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel

from app.api.codecs import header_timeout, parse_request
from app.api.middleware import LABELS_KEY
from app.config import Settings
from app.errors import Forbidden, InvalidInput, Unauthorized
from app.runtime.service import Service

B = TypeVar("B", bound=BaseModel)


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


def check_key(settings: Settings, request: Request) -> None:
    """401 without a key, 403 with a wrong one; keys compared in constant time."""
    if not settings.api_keys:
        return
    key = presented_key(request)
    if key is None:
        raise Unauthorized("an API key is required: Authorization: Bearer <key> or X-API-Key",
                           headers={"WWW-Authenticate": "Bearer"})
    matched = False
    for valid in settings.api_keys:
        matched |= hmac.compare_digest(key.encode(), valid.encode())
    if not matched:
        raise Forbidden("the API key is not valid")


def require_key(request: Request, settings: SettingsDep) -> None:
    check_key(settings, request)


Authorized = Depends(require_key)


@dataclass
class ModelCall(Generic[B]):
    """A predict or explain request, authorised and parsed, addressed to one model."""

    service: Service
    model: str
    body: B
    files: list[bytes]
    deadline: float
    labels: dict[str, str]
    """The request's metric labels (route, model, method), filled in as they become known."""


async def open_model_call(request: Request, route: str, schema: type[B], model: str,
                          in_body: bool) -> ModelCall[B]:
    """Label, authorise (first), set the deadline and parse a predict or explain request.

    Called directly by the hot routes rather than through `Depends`: FastAPI's solver costs more
    than the work it does here. `in_body`: the model is named by the body's `model` (`POST /{route}`).
    """
    service = get_service(request)
    labels: dict[str, str] = request.scope[LABELS_KEY]
    labels.update(route=route, model=model)
    check_key(service.settings, request)
    deadline = service.deadline(header_timeout(request))
    body, files = await parse_request(request, schema, service.settings.max_body_bytes)
    if in_body:
        named = getattr(body, "model", None)
        if not named:
            raise InvalidInput(f'POST /{route} needs "model" in the body')
        model = named
        labels["model"] = model
    return ModelCall(service, model, body, files, deadline, labels)
