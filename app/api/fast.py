"""The hot routes (predict, explain) served as plain Starlette routes, matched before all others.

FastAPI's endpoint machinery (its route matching through included routers, the dependency solver,
the endpoint runner) costs about 30 µs a request on the event loop, as much as a route whose
endpoint does nothing takes in all (45 µs against 15 for a plain Starlette route: a micro benchmark
in bench/results/history.md). These endpoints take only the request and their path parameters,
parse their own bodies and return Responses, so FastAPI does nothing for them but that. Each
documented APIRoute of the routers given gets a twin here, same path and methods, calling the
same endpoint; the twins are registered first, so they serve, and stay out of the OpenAPI
document, which FastAPI keeps writing from the APIRoutes. Errors raised by the endpoints reach the
same exception handlers either way (Starlette's, installed by app/api/problems.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

Endpoint = Callable[..., Awaitable[Response]]


def plain(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """`endpoint(request=..., **path parameters)` as a Starlette endpoint."""

    async def serve(request: Request) -> Response:
        return await endpoint(request=request, **request.path_params)

    serve.__wrapped__ = endpoint  # type: ignore[attr-defined]
    serve.__name__ = f"{endpoint.__name__}_plain"
    return serve


def install(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """A plain twin of every APIRoute in `routers`; call before any router is included."""
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            endpoint: Any = route.endpoint
            app.add_route(route.path, plain(endpoint), methods=sorted(route.methods or ()),
                          name=f"{route.name}_plain", include_in_schema=False)
