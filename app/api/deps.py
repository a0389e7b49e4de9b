"""Dependencies shared by routers: the service, settings, and the API-key check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.errors import Forbidden, Unauthorized
from app.runtime.service import Service


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
