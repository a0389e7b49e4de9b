"""The documents cannot drift from the code: their shell and Python examples run against a live
server as a newcomer would type them, and the answers they show are the service's answers.

Examples run from a scratch folder holding links to `models/` and to the project's `.venv` (so
`.venv/bin/explainserve` and `.venv/bin/python` work as the documents say), with a PATH that does
not include the virtual environment and no PYTHONPATH: a command that only works inside the
activated venv, or a script that only imports from the repository root, fails here as it would
for a newcomer. `localhost:8000` in the examples is pointed at the test server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, LiveServer
from tests.fixtures.doc_blocks import Block, blocks, json_matches, parse_shown_json, text_matches

DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "api.md", ROOT / "docs" / "api-v2.md"]
EXAMPLES = [block for document in DOCUMENTS for block in blocks(document)]


def _pointed(code: str, live: LiveServer) -> str:
    port = str(live.port)
    return code.replace("localhost:8000", f"127.0.0.1:{port}").replace("127.0.0.1:8000", f"127.0.0.1:{port}")


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "models").symlink_to(ROOT / "models")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


def newcomer_env(live: LiveServer) -> dict[str, str]:
    """The environment of a shell where the venv is not activated."""
    venv = str(Path(sys.prefix).resolve())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and not str(Path(p).resolve()).startswith(venv))
    env["EXPLAINSERVE_URL"] = live.url  # where the examples' default http://127.0.0.1:8000 is
    env["COLUMNS"] = "100"
    return env


def test_the_documents_have_runnable_examples_and_shown_answers() -> None:
    for document in DOCUMENTS:
        found = blocks(document)
        assert any(b.language == "bash" for b in found), document
        assert any(b.answer is not None for b in found), f"{document} shows no checked answer"
    readme = blocks(ROOT / "README.md")
    assert any("curl" in b.code and "Accept: image/png" in b.code for b in readme)
    assert any(b.language == "python" for b in readme)


def _check_answer(block: Block, stdout: str) -> None:
    assert block.answer is not None
    if block.answer.language == "json":
        json_matches(parse_shown_json(block.answer.code), parse_shown_json(stdout), block.answer.name)
    else:
        text_matches(block.answer.code, stdout)


@pytest.mark.parametrize("block", EXAMPLES, ids=[b.name for b in EXAMPLES])
def test_example_runs_and_answers_as_shown(block: Block, live: LiveServer, scratch: Path) -> None:
    code = _pointed(block.code, live)
    if block.language == "bash":
        assert shutil.which("curl"), "curl is needed by the documents' examples"
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        command = [str(scratch / ".venv" / "bin" / "python"), "-c", code]
    done = subprocess.run(command, cwd=scratch, env=newcomer_env(live), capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, f"{block.name} failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    if "-o overlay.png" in code:
        assert (scratch / "overlay.png").read_bytes().startswith(b"\x89PNG")
    if block.answer is not None:
        _check_answer(block, done.stdout)
