"""The built-in page: `GET /ui`, its static assets (shipped in the `app.ui` package), and the
catalog's demo examples for it (`GET /ui/examples/{model}`, `GET /ui/examples/{model}/{name}`).

The page and its assets are public; the examples, like every model route, need an API key when
keys are configured. The page calls only the documented API, with the key the user gave it.
"""

from __future__ import annotations

import html
import mimetypes
from importlib.resources import files

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from app.api.deps import Authorized, ServiceDep
from app.api.middleware import LABELS_KEY
from app.api.problems import problem_responses
from app.api.responses import JSONResponse
from app.render.options import COLORMAPS, SIGNS

PACKAGE = "app.ui"
STATIC_PREFIX = "/ui/static"

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "img-src 'self' data: blob:", "script-src 'self'", "style-src 'self'",
    "connect-src 'self'", "object-src 'none'", "base-uri 'none'", "form-action 'none'",
    "frame-ancestors 'none'",
])
"""Everything the page loads comes from the service itself: no CDN, no other host."""

_PAGE_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache",
                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _options(values: tuple[str, ...]) -> str:
    return "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)


def _page() -> str:
    """index.html with the render options the service accepts filled in."""
    text = (files(PACKAGE) / "static" / "index.html").read_text(encoding="utf-8")
    return text.replace("{{colormaps}}", _options(COLORMAPS)).replace("{{signs}}", _options(SIGNS))


PAGE = _page()

router = APIRouter(tags=["ui"])
router.routes.append(Mount(STATIC_PREFIX, app=StaticFiles(packages=[(PACKAGE, "static")]), name="ui-static"))


@router.get("/ui", response_class=HTMLResponse, responses={
    200: {"content": {"text/html": {"schema": {"type": "string"}}},
          "description": "The built-in page: pick a model, upload an image or fill a row, see the explanation"}})
async def page(request: Request) -> Response:
    request.scope[LABELS_KEY]["route"] = "ui"
    return HTMLResponse(PAGE, headers=_PAGE_HEADERS)


def _media_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


@router.get("/ui/examples/{model}", dependencies=[Authorized], include_in_schema=False)
async def list_examples(model: str, request: Request, service: ServiceDep) -> Response:
    """The model's demo inputs (catalog key `examples`), by name, with where to fetch each."""
    request.scope[LABELS_KEY].update(route="ui_examples", model=model)
    spec = service.registry.get(model).spec
    examples = [{"name": path.name, "url": f"ui/examples/{model}/{path.name}",
                 "media_type": _media_type(path.name)} for path in spec.examples]
    return JSONResponse({"model": model, "examples": examples})


@router.get("/ui/examples/{model}/{name}", dependencies=[Authorized], include_in_schema=False,
            responses=problem_responses(401, 403, 404))
async def example(model: str, name: str, request: Request, service: ServiceDep) -> Response:
    """One example's bytes; only names the catalog lists are served (no path is ever built from `name`)."""
    request.scope[LABELS_KEY].update(route="ui_examples", model=model)
    spec = service.registry.get(model).spec
    for path in spec.examples:
        if path.name == name:
            return FileResponse(path, media_type=_media_type(name), headers={"Cache-Control": "no-cache"})
    raise HTTPException(404, f"model '{model}' has no example '{name}'")
