"""Dependencies shared by routers: the service, settings, and the API-key check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel

from app.api.auth import check_key
from app.api.bodies import BodyLimits
from app.api.codecs import header_timeout, parse_request
from app.api.middleware import LABELS_KEY
from app.config import Settings
from app.errors import InvalidInput
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


def body_limits(service: Service) -> BodyLimits:
    """What a request body may hold: MAX_INSTANCES instances of the widest catalog model."""
    settings = service.settings
    widest = max((len(e.spec.features or []) for e in service.registry.models.values()), default=1)
    return BodyLimits(settings.max_body_bytes, settings.max_instances,
                      BodyLimits.values_for(settings.max_instances, widest), settings.body_timeout_s,
                      draining=lambda: service.registry.state == "draining")


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
    body, files = await parse_request(request, schema, body_limits(service), labels)
    if in_body:
        named = getattr(body, "model", None)
        if not named:
            raise InvalidInput(f'POST /{route} needs "model" in the body')
        model = named
        labels["model"] = model
    return ModelCall(service, model, body, files, deadline, labels)
