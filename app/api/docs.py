"""The OpenAPI description and its interactive page (Swagger UI at /docs), served with its assets
from the service itself, so it works without internet.

The assets come from `fastapi-offline`, which ships Swagger UI 5. (Its ReDoc bundle is not served:
ReDoc's page loads its logo from a CDN.) With API
keys configured, the description and the pages need a key like the model routes: browsers are
asked for it by a Basic challenge (any user name, the key as password), and Swagger UI's calls
then carry it.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response

from app.api.auth import BROWSER_CHALLENGE, check_key
from app.config import Settings

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs/assets"
OPENAPI_URL = "/openapi.json"

router = APIRouter(include_in_schema=False)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.get(OPENAPI_URL)
async def openapi_json(request: Request) -> Response:
    check_key(_settings(request), request, BROWSER_CHALLENGE)
    return Response(orjson.dumps(request.app.openapi()), media_type="application/json")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    check_key(_settings(request), request, BROWSER_CHALLENGE)
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL, title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url="/docs/oauth2-redirect",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        swagger_ui_parameters={"persistAuthorization": False, "tryItOutEnabled": True})


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


def install(app: FastAPI) -> None:
    """The routes above, and the assets (public: they are the same for every service)."""
    app.include_router(router)
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
