"""The embedded mode never imports Ray: not the service, not the CLI, not a served request."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import CATALOG, ROOT

SCRIPT = f"""
import sys, httpx
from app.config import Settings
import app.__main__, app.cli
from tests.conftest import LiveServer
with LiveServer(Settings(models={str(CATALOG)!r}, device="cpu", log_level="WARNING")) as server:
    response = httpx.post(server.url + "/v1/models/purchase/predict",
                          json={{"instances": [[31, 420, 5, 2, 1, 0.1]]}})
    assert response.status_code == 200, response.text
    assert "x-replica" not in response.headers
loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith(("ray.", "app.deploy")))
print(loaded)
"""


def test_serving_embedded_imports_no_ray() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
