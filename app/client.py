"""A small synchronous Python client for the explainserve HTTP API (API.md).

    from app.client import Client

    with Client("http://127.0.0.1:8000") as client:
        print([m.name for m in client.models()])
        print(client.predict("purchase", [{"age": 31, "monthly_spend": 420.0, ...}])[0].label)
        result = client.explain("shapes", ["photo.png"])
        result.explanations[0].save_overlay("photo.overlay.png")

Instances may be image file paths (`str` or `Path`), PIL images, raw image bytes, `data:` URIs,
tabular rows as dicts (feature name -> number) or as lists / 1-D numpy arrays in feature
order; a 2-D numpy array is a batch of rows. Errors answered by the service raise `APIError`
with the problem+json fields; transport failures (no server, timeout) raise `httpx.HTTPError`.

Light on purpose: httpx, numpy and Pillow only (no torch, no FastAPI).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = [
    "APIError",
    "ClassScore",
    "Client",
    "ExplainResult",
    "Explanation",
    "FeatureAttribution",
    "ModelInfo",
    "Prediction",
    "Target",
    "decode_data_uri",
    "encode_instance",
    "encode_instances",
]

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


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str | None
    score: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClassScore:
        return cls(int(data["index"]), data.get("label"), float(data["score"]))


@dataclass(frozen=True)
class Prediction:
    """Classification: `index`, `label`, `score`, `top_k`. Regression: `value`."""

    index: int | None = None
    label: str | None = None
    score: float | None = None
    top_k: list[ClassScore] | None = None
    value: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prediction:
        top_k = data.get("top_k")
        return cls(
            index=data.get("index"),
            label=data.get("label"),
            score=data.get("score"),
            top_k=[ClassScore.from_json(item) for item in top_k] if top_k is not None else None,
            value=data.get("value"),
        )

    def describe(self) -> str:
        """One short line: `benign 97.0%`, `class 2 41.3%` or `151.3` (regression)."""
        if self.value is not None:
            return f"{self.value:.4g}"
        name = self.label if self.label is not None else f"class {self.index}"
        return f"{name} {100 * (self.score or 0.0):.1f}%"

    def to_json(self) -> dict[str, Any]:
        if self.value is not None:
            return {"value": self.value}
        out: dict[str, Any] = {"index": self.index, "label": self.label, "score": self.score}
        if self.top_k is not None:
            out["top_k"] = [{"index": c.index, "label": c.label, "score": c.score} for c in self.top_k]
        return out


@dataclass(frozen=True)
class Target:
    """The class an explanation attributes (index, label, and its score when known)."""

    index: int
    label: str | None
    score: float | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Target:
        score = data.get("score")
        return cls(int(data["index"]), data.get("label"), float(score) if score is not None else None)


@dataclass(frozen=True)
class FeatureAttribution:
    """A tabular feature's submitted value and its signed contribution."""

    feature: str
    value: float
    attribution: float


def decode_data_uri(uri: str) -> bytes:
    """The bytes of a `data:<type>;base64,<payload>` URI."""
    head, sep, payload = uri.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise ValueError("not a base64 data URI")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64 in data URI: {exc}") from None


@dataclass(frozen=True)
class Explanation:
    """One instance's explanation.

    `attributions` is a list of `FeatureAttribution` (tabular, in feature order) or an
    H x W float32 array (image, at the model's input size) when asked for with
    `outputs=["attributions"]`; None otherwise. `overlay`, `heatmap` and `chart` are the data
    URIs as sent (ready for `<img src>`); the `*_png` properties decode them to PNG bytes.
    """

    prediction: Prediction
    target: Target
    convergence_delta: float | None = None
    attributions: list[FeatureAttribution] | NDArray[np.float32] | None = None
    overlay: str | None = None
    heatmap: str | None = None
    chart: str | None = None
    summary: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Explanation:
        raw_attr = data.get("attributions")
        attributions: list[FeatureAttribution] | NDArray[np.float32] | None = None
        if raw_attr is not None:
            if raw_attr and isinstance(raw_attr[0], Mapping):
                attributions = [FeatureAttribution(str(a["feature"]), float(a["value"]),
                                                   float(a["attribution"])) for a in raw_attr]
            else:
                attributions = np.asarray(raw_attr, dtype=np.float32)
        return cls(
            prediction=Prediction.from_json(data.get("prediction") or {}),
            target=Target.from_json(data["target"]),
            convergence_delta=data.get("convergence_delta"),
            attributions=attributions,
            overlay=data.get("overlay"),
            heatmap=data.get("heatmap"),
            chart=data.get("chart"),
            summary=data.get("summary"),
            raw=dict(data),
        )

    @property
    def overlay_png(self) -> bytes | None:
        return decode_data_uri(self.overlay) if self.overlay else None

    @property
    def heatmap_png(self) -> bytes | None:
        return decode_data_uri(self.heatmap) if self.heatmap else None

    @property
    def chart_png(self) -> bytes | None:
        return decode_data_uri(self.chart) if self.chart else None

    def save_overlay(self, path: str | Path) -> Path:
        """Write the overlay PNG to `path` (parent folders created); returns the path."""
        return _save(self.overlay_png, path, "overlay", 'outputs=["overlay"] on an image model')

    def save_heatmap(self, path: str | Path) -> Path:
        return _save(self.heatmap_png, path, "heatmap", 'outputs=["heatmap"] on an image model')

    def save_chart(self, path: str | Path) -> Path:
        return _save(self.chart_png, path, "chart", 'outputs=["chart"] on a tabular model')

    def ranked(self) -> list[FeatureAttribution]:
        """Tabular attributions, strongest (by absolute value) first."""
        if not isinstance(self.attributions, list):
            raise ValueError("ranked() needs tabular attributions")
        return sorted(self.attributions, key=lambda a: abs(a.attribution), reverse=True)


def _save(data: bytes | None, path: str | Path, what: str, hint: str) -> Path:
    if data is None:
        raise ValueError(f"this explanation has no {what}: ask for it with {hint}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


@dataclass(frozen=True)
class ExplainResult:
    """The answer to one explain request: one `Explanation` per instance, in request order."""

    model: str
    method: str
    params: dict[str, Any]
    explanations: list[Explanation]
    timings: dict[str, float]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExplainResult:
        return cls(
            model=str(data["model"]),
            method=str(data["method"]),
            params=dict(data.get("params") or {}),
            explanations=[Explanation.from_json(e) for e in data["explanations"]],
            timings={k: float(v) for k, v in (data.get("timings_ms") or {}).items()},
        )

    def __len__(self) -> int:
        return len(self.explanations)

    def __getitem__(self, i: int) -> Explanation:
        return self.explanations[i]


@dataclass(frozen=True)
class ModelInfo:
    """A served model (`GET /v1/models/{name}`); `methods` maps a method to its default params."""

    name: str
    kind: str
    task: str
    labels: list[str] | None
    features: list[str] | None
    input: dict[str, int] | None
    device: str
    default_method: str
    methods: dict[str, dict[str, Any]]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelInfo:
        features = data.get("features")
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            task=str(data["task"]),
            labels=data.get("labels"),
            features=[str(f["name"]) for f in features] if features is not None else None,
            input=data.get("input"),
            device=str(data.get("device", "")),
            default_method=str(data.get("default_method", "")),
            methods={str(m["name"]): dict(m.get("params") or {}) for m in data.get("methods") or []},
        )


# --------------------------------------------------------------------------- instances


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode("ascii")}


def _number(value: Any, where: str) -> float | int:
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, np.integer | np.floating):
        return value.item()  # type: ignore[no-any-return]
    raise TypeError(f"{where}: expected a number, got {type(value).__name__}")


def _image_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "I;16", "1"):
        image = image.convert("RGB")
    image.save(buf, format="PNG")
    return buf.getvalue()


def encode_instance(instance: Any) -> Any:
    """One instance in the API's JSON form (see the module docstring for what is accepted)."""
    if isinstance(instance, Path):
        return _b64(instance.read_bytes())
    if isinstance(instance, str):
        if instance.startswith("data:"):
            return instance
        return _b64(Path(instance).read_bytes())
    if isinstance(instance, bytes | bytearray | memoryview):
        return _b64(bytes(instance))
    if isinstance(instance, Image.Image):
        return _b64(_image_bytes(instance))
    if isinstance(instance, Mapping):
        if "b64" in instance and len(instance) == 1:
            return {"b64": str(instance["b64"])}
        return {str(k): _number(v, f"feature {k!r}") for k, v in instance.items()}
    if isinstance(instance, np.ndarray):
        if instance.ndim == 1:
            return [_number(v, f"column {i}") for i, v in enumerate(instance.tolist())]
        if instance.ndim in (2, 3) and instance.dtype == np.uint8:
            return _b64(_image_bytes(Image.fromarray(instance)))
        raise TypeError(f"an array instance must be a 1-D row or an H x W (x C) uint8 image, "
                        f"got shape {instance.shape} {instance.dtype}")
    if isinstance(instance, Sequence):
        return [_number(v, f"column {i}") for i, v in enumerate(instance)]
    raise TypeError(f"cannot send a {type(instance).__name__} as an instance: use an image path, "
                    "PIL image, bytes, a dict of features or a list of numbers")


def _is_row(value: Any) -> bool:
    """A flat sequence of numbers (one tabular row)."""
    return (isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)
            and len(value) > 0
            and all(isinstance(v, int | float | np.integer | np.floating) for v in value))


def encode_instances(instances: Any) -> list[Any]:
    """A request's `instances`: a list of instances, or one instance on its own.

    One image (path, PIL image, bytes), one dict, one flat list of numbers or a 1-D array is
    sent as a single instance; a 2-D numeric array is one row per line.
    """
    if isinstance(instances, np.ndarray):
        if instances.ndim == 2 and instances.dtype != np.uint8:
            return [encode_instance(row) for row in instances]
        if instances.ndim == 4:
            return [encode_instance(img) for img in instances]
        return [encode_instance(instances)]
    if isinstance(instances, str | bytes | bytearray | memoryview | Path | Image.Image | Mapping):
        return [encode_instance(instances)]
    if _is_row(instances):
        return [encode_instance(instances)]
    if isinstance(instances, Iterable):
        encoded = [encode_instance(item) for item in instances]
        if not encoded:
            raise ValueError("no instances to send")
        return encoded
    return [encode_instance(instances)]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# --------------------------------------------------------------------------- client


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
                render: Mapping[str, Any] | None = None, top_k: int | None = None) -> ExplainResult:
        """Attributions (and overlays, charts, summaries as `outputs` asks) per instance."""
        body = self._explain_body(instances, method, target, params, outputs, render, top_k)
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
            body["target"] = _plain(target)
        if params:
            body["params"] = _plain(params)
        if outputs is not None:
            body["outputs"] = [outputs] if isinstance(outputs, str) else list(outputs)
        if render:
            body["render"] = dict(render)
        if top_k is not None:
            body["top_k"] = top_k
        return body


def _quote(name: str) -> str:
    return quote(name, safe="")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (targets, params) as plain JSON values."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
