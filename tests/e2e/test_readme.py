"""The README cannot drift from the code: its shell and Python blocks run against a live server.

Blocks that set up the machine or need Docker (`make ...`, `docker ...`, `console` blocks) are not
run; every other ```bash and ```python block is, from a scratch folder holding a link to
`models/`, with the README's `localhost:8000` pointed at the test server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, LiveServer

_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
_SKIP = ("make ", "docker ", "MODELS=")


def _blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [body for lang, body in _BLOCK.findall(text)
            if lang == language and not any(marker in body for marker in _SKIP)]


def _pointed(code: str, live: LiveServer) -> str:
    port = str(live.port)
    return code.replace("localhost:8000", f"127.0.0.1:{port}").replace("127.0.0.1:8000", f"127.0.0.1:{port}")


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "models").symlink_to(ROOT / "models")
    return tmp_path


def _env(live: LiveServer) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["EXPLAINSERVE_URL"] = live.url
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_the_readme_has_runnable_examples() -> None:
    assert len(_blocks("bash")) >= 5
    assert any("curl" in b and "Accept: image/png" in b for b in _blocks("bash"))
    assert _blocks("python")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("index", range(len(_blocks("bash"))))
def test_readme_shell_block_runs(index: int, live: LiveServer, scratch: Path) -> None:
    code = _pointed(_blocks("bash")[index], live)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=scratch, env=_env(live),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"block {index} failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    if "-o overlay.png" in code:
        assert (scratch / "overlay.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_block_runs(index: int, live: LiveServer, scratch: Path) -> None:
    code = _pointed(_blocks("python")[index], live)
    done = subprocess.run([sys.executable, "-c", code], cwd=scratch, env=_env(live),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"block {index} failed:\n{code}\n--- stderr\n{done.stderr}"
