"""The "same answers" check: one identical request to both servers, answers compared."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np

from bench.scenarios import Scenario
from bench.servers import Server

__all__ = ["compare_outputs", "overlays_agree"]

OVERLAY_MAX_STEP = 4
OVERLAY_MEAN_STEP = 0.1
"""How far the two overlays may differ, in colour steps of 255: at most OVERLAY_MAX_STEP in any
channel of any pixel, OVERLAY_MEAN_STEP on average. The servers compute in float32 in different
orders (ours folds BatchNorm into the convolutions and runs channels-last), which moves single
pixels of a pixel-level map by up to a few percent of its largest value (resnet18's IG: 3.4e-2,
correlation 0.99999) and so a few overlay pixels by a colour step or three where a colour lands
on the other side of a rounding (resnet50 IG: 1.6% of the pixels by up to 3 steps, a mean of
0.03); a different map moves most pixels by many steps."""


def overlays_agree(diff: np.ndarray) -> bool:
    """Whether the absolute differences `diff` of two overlays' pixels are float rounding."""
    return bool(diff.size == 0 or (int(diff.max()) <= OVERLAY_MAX_STEP and float(diff.mean()) <= OVERLAY_MEAN_STEP))


def _overlay_pixels(uri: str) -> np.ndarray:
    from PIL import Image

    data = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def compare_outputs(scenario: Scenario, ours: Server, naive: Server, body: bytes) -> dict[str, Any]:
    """Send one request to both and compare: same prediction, attributions, overlay."""
    path = f"/v1/models/{scenario.model}/explain"
    headers = {"content-type": "application/json"}
    a = httpx.post(ours.url + path, content=body, headers=headers, timeout=600, trust_env=False)
    b = httpx.post(naive.url + path, content=body, headers=headers, timeout=600, trust_env=False)
    if a.status_code != 200 or b.status_code != 200:
        return {"ok": False, "detail": f"status ours {a.status_code}, naive {b.status_code}: {a.text[:300]}"}
    ea, eb = a.json()["explanations"][0], b.json()["explanations"][0]
    out: dict[str, Any] = {"same_prediction": ea["prediction"]["index"] == eb["prediction"]["index"],
                           "same_target": ea["target"]["index"] == eb["target"]["index"],
                           "same_keys": sorted(ea) == sorted(eb)}
    if "overlay" in ea and "overlay" in eb:
        pa, pb = _overlay_pixels(ea["overlay"]), _overlay_pixels(eb["overlay"])
        diff = np.abs(pa - pb) if pa.shape == pb.shape else None
        out["overlay_identical_bytes"] = ea["overlay"] == eb["overlay"]
        out["overlay_max_abs_diff"] = int(diff.max()) if diff is not None else None
        out["overlay_pixels_differing"] = float((diff > 0).mean()) if diff is not None else None
        out["overlay_mean_abs_diff"] = round(float(diff.mean()), 4) if diff is not None else None
        out["overlays_agree"] = diff is not None and overlays_agree(diff)
    if isinstance(ea.get("attributions"), list) and ea["attributions"] and isinstance(ea["attributions"][0], dict):
        va = np.array([x["attribution"] for x in ea["attributions"]])
        vb = np.array([x["attribution"] for x in eb["attributions"]])
        out["attribution_max_abs_diff"] = float(np.abs(va - vb).max())
        out["attribution_scale"] = float(np.abs(va).max())
    if ea.get("convergence_delta") is not None and eb.get("convergence_delta") is not None:
        out["delta_ours"], out["delta_naive"] = ea["convergence_delta"], eb["convergence_delta"]
    attr_tolerance = 1e-3 * max(out.get("attribution_scale", 1.0), 1e-6)
    out["ok"] = bool(out["same_prediction"] and out["same_target"] and out["same_keys"]
                     and out.get("overlays_agree", True)
                     and out.get("attribution_max_abs_diff", 0.0) <= attr_tolerance)
    return out
