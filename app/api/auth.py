"""API keys: which key a request presents, and the check (401 without one, 403 with a wrong one).

A key is presented as `Authorization: Bearer <key>`, `X-API-Key: <key>`, or `Authorization: Basic`
with the key as password (any user name), which browsers send after a Basic challenge: pages a
person opens (/docs, /metrics) answer 401 with that challenge, so the browser asks for the key.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.requests import HTTPConnection

from app.config import Settings
from app.errors import Forbidden, Unauthorized

API_CHALLENGE = 'Bearer realm="explainserve"'
BROWSER_CHALLENGE = 'Basic realm="explainserve", charset="UTF-8"'


def _basic_password(token: str) -> str | None:
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return password or user or None


def presented_key(request: HTTPConnection) -> str | None:
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        if scheme.lower() == "basic" and token.strip():
            return _basic_password(token.strip())
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


def key_is_valid(settings: Settings, key: str) -> bool:
    """Compared in constant time with every configured key."""
    matched = False
    for valid in settings.api_keys:
        matched |= hmac.compare_digest(key.encode(), valid.encode())
    return matched


def check_key(settings: Settings, request: HTTPConnection, challenge: str = API_CHALLENGE) -> None:
    """Nothing when no keys are configured or a valid one is presented; else 401 or 403."""
    if not settings.api_keys:
        return
    key = presented_key(request)
    if key is None:
        raise Unauthorized("an API key is required: Authorization: Bearer <key> or X-API-Key",
                           headers={"WWW-Authenticate": challenge})
    if not key_is_valid(settings, key):
        raise Forbidden("the API key is not valid")
