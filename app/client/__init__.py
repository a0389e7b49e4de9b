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

from app.client.encoding import encode_instance, encode_instances
from app.client.http import DEFAULT_TIMEOUT, DEFAULT_URL, APIError, Client
from app.client.results import (
    ClassScore,
    ExplainResult,
    Explanation,
    FeatureAttribution,
    ModelInfo,
    Prediction,
    Target,
    decode_data_uri,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
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
