"""`Client`: the HTTP calls, retries on 429/503, and `APIError` from problem+json."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from app.client.encoding import encode_instances, plain
from app.client.results import ExplainResult, ModelInfo, Prediction

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 120.0
_RETRY_STATUSES = frozenset({429, 503})
_MAX_RETRY_WAIT_S = 10.0


class APIError(Exception):
    """An error answered by the service (application/problem+json, RFC 9457)."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None,
                 *, type: str = "about:blank", request_id: str | None = None,
                 retry_after: float | None = None):
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.type = type
        self.request_id = request_id
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, response: httpx.Response) -> APIError:
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        retry_after = _retry_after(response)
        request_id = response.headers.get("x-request-id")
        if isinstance(body, dict) and "status" in body:
            errors = body.get("errors")
            return cls(int(body.get("status") or response.status_code),
                       str(body.get("title") or response.reason_phrase),
                       str(body.get("detail") or ""),
                       errors if isinstance(errors, list) else None,
                       type=str(body.get("type") or "about:blank"),
                       request_id=request_id, retry_after=retry_after)
        text = response.text.strip()[:500]
        return cls(response.status_code, response.reason_phrase or "Error", text,
                   request_id=request_id, retry_after=retry_after)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None




class Client:
    """Synchronous client; thread-safe (one connection pool), usable as a context manager.

    `retries` re-sends a request answered 429 (queue full) or 503 (starting, draining) up to
    that many times, waiting as the `Retry-After` header says (at most 10 s each time).
    """

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = 2,
                 headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None):
        all_headers = {"Accept": "application/json", "User-Agent": "explainserve-client/0.1"}
        if api_key:
            all_headers["Authorization"] = f"Bearer {api_key}"
        all_headers.update(headers or {})
        self.base_url = base_url.rstrip("/")
        self.retries = max(0, retries)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=all_headers,
                                  transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            response = self._http.request(method, path, **kwargs)
            if response.is_success:
                return response
            if response.status_code in _RETRY_STATUSES and attempt < self.retries:
                attempt += 1
                wait = _retry_after(response)
                time.sleep(min(_MAX_RETRY_WAIT_S, wait if wait is not None else 0.5 * attempt))
                continue
            raise APIError.from_response(response)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    # -- health and discovery

    def health(self) -> dict[str, Any]:
        return dict(self._json("GET", "/healthz"))

    def ready(self) -> bool:
        """True when every model is loaded and warm (`GET /readyz` answers 200)."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.25) -> None:
        """Block until `ready()`, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.base_url} not ready after {timeout:.0f} s")
            time.sleep(interval)

    def models(self) -> list[ModelInfo]:
        return [ModelInfo.from_json(m) for m in self._json("GET", "/v1/models")["models"]]

    def model(self, name: str) -> ModelInfo:
        return ModelInfo.from_json(self._json("GET", f"/v1/models/{_quote(name)}"))

    # -- predict and explain

    def predict(self, model: str, instances: Any, top_k: int | None = None) -> list[Prediction]:
        """One `Prediction` per instance, in order."""
        body: dict[str, Any] = {"instances": encode_instances(instances)}
        if top_k is not None:
            body["top_k"] = top_k
        data = self._json("POST", f"/v1/models/{_quote(model)}/predict", json=body)
        return [Prediction.from_json(p) for p in data["predictions"]]

    def explain(self, model: str, instances: Any, method: str | None = None, target: Any = None,
                params: Mapping[str, Any] | None = None, outputs: Sequence[str] | None = None,
                render: Mapping[str, Any] | None = None, top_k: int | None = None,
                attributions_format: str | None = None) -> ExplainResult:
        """Attributions (and overlays, charts, summaries as `outputs` asks) per instance.
        `attributions_format="float32"` has image attributions sent as bytes (every value as
        computed, a quarter of the size of lists); either way they arrive as numpy arrays."""
        body = self._explain_body(instances, method, target, params, outputs, render, top_k)
        if attributions_format is not None:
            body["attributions_format"] = attributions_format
        data = self._json("POST", f"/v1/models/{_quote(model)}/explain", json=body)
        return ExplainResult.from_json(data)

    def explain_png(self, model: str, image: Any, method: str | None = None, target: Any = None,
                    params: Mapping[str, Any] | None = None,
                    render: Mapping[str, Any] | None = None) -> bytes:
        """The overlay PNG bytes of one image (`Accept: image/png`)."""
        body = self._explain_body(image, method, target, params, None, render, None)
        if len(body["instances"]) != 1:
            raise ValueError("explain_png takes exactly one image")
        response = self._send("POST", f"/v1/models/{_quote(model)}/explain", json=body,
                              headers={"Accept": "image/png"})
        return response.content

    @staticmethod
    def _explain_body(instances: Any, method: str | None, target: Any,
                      params: Mapping[str, Any] | None, outputs: Sequence[str] | None,
                      render: Mapping[str, Any] | None, top_k: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"instances": encode_instances(instances)}
        if method is not None:
            body["method"] = method
        if target is not None:
            body["target"] = plain(target)
        if params:
            body["params"] = plain(params)
        if outputs is not None:
            body["outputs"] = [outputs] if isinstance(outputs, str) else list(outputs)
        if render:
            body["render"] = dict(render)
        if top_k is not None:
            body["top_k"] = top_k
        return body


def _quote(name: str) -> str:
    return quote(name, safe="")
