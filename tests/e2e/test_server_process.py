"""`python -m app` as a real process: starts, serves, and exits cleanly on SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from models.shapes import draw_sample
from tests import conftest
from tests.conftest import ROOT, free_port, image_bytes

START_TIMEOUT_S = 60
EXIT_TIMEOUT_S = 20


def _log(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def test_server_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MODELS": str(conftest.CATALOG), "PORT": str(port), "HOST": "127.0.0.1",
           "DEVICE": "cpu", "LOG_LEVEL": "INFO"}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                assert proc.poll() is None, f"server exited with {proc.returncode}:\n{_log(log)}"
                assert time.monotonic() - started < START_TIMEOUT_S, f"never ready:\n{_log(log)}"
                try:
                    ready = client.get("/readyz")
                    if ready.status_code == 200:
                        break
                    assert ready.status_code == 503, ready.text
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            assert set(ready.json()["models"].values()) == {"ready"}
            assert client.get("/healthz").json() == {"status": "ok"}

            rows = json.loads((ROOT / "models" / "breast_cancer" / "example.json").read_text())["instances"]
            r = client.post("/v1/models/breast-cancer/predict", json={"instances": rows[:1]})
            assert r.status_code == 200, r.text
            (pred,) = r.json()["predictions"]
            assert pred["label"] in ("malignant", "benign") and 0.5 <= pred["score"] <= 1.0

            png = image_bytes(draw_sample(np.random.default_rng(0), label=1).image, "PNG")
            r = client.post("/v1/models/shapes/predict",
                            json={"instances": [{"b64": base64.b64encode(png).decode()}], "top_k": 2})
            assert r.status_code == 200, r.text
            (pred,) = r.json()["predictions"]
            assert pred["label"] in ("circle", "square", "triangle", "star")
            assert len(pred["top_k"]) == 2
            assert r.headers.get("x-request-id")

        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=EXIT_TIMEOUT_S)
        assert code == 0, f"exit code {code} after SIGTERM:\n{_log(log)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
