"""docs/api-v2.md cannot drift from the code: its shell and Python blocks run against a live server,
as the README's do (`tests/e2e/test_readme.py`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, LiveServer
from tests.e2e.test_readme import _BLOCK, _env, _pointed

DOC = ROOT / "docs" / "api-v2.md"


def _blocks(language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(DOC.read_text(encoding="utf-8")) if lang == language]


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "models").symlink_to(ROOT / "models")
    return tmp_path


def test_the_reference_has_examples() -> None:
    assert len(_blocks("bash")) == 2 and len(_blocks("python")) == 2


@pytest.mark.parametrize(("language", "index"), [(lang, i) for lang in ("bash", "python") for i in range(2)])
def test_reference_block_runs(language: str, index: int, live: LiveServer, scratch: Path) -> None:
    code = _pointed(_blocks(language)[index], live)
    command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=scratch, env=_env(live), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{language} block {index} failed:\n{code}\n--- stdout\n{done.stdout}\n" \
                                 f"--- stderr\n{done.stderr}"
    assert done.stdout.strip()
