"""bench/deps.py: what bench/gpu.sh installs and checks, read from pyproject.toml."""

from __future__ import annotations

import tomllib

import pytest
import torch

from bench import deps
from tests.conftest import ROOT


def test_requirements_are_pyprojects_own_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = deps.requirements()
    # every service dependency but the one no scenario uses, exactly as pinned
    assert [r for r in project["dependencies"] if not r.startswith("scikit-learn")] == wanted[:-1]
    assert any(r.startswith("isal>=") for r in wanted)  # the overlay encoder: a fresh machine needs it
    assert any(r.startswith("uvloop>=") and "sys_platform" in r for r in wanted)
    tomli_w = [r for r in project["optional-dependencies"]["dev"] if r.startswith("tomli-w")]
    assert wanted[-1:] == tomli_w


def test_nothing_is_missing_in_the_project_venv() -> None:
    assert deps.missing() == []


def test_a_missing_distribution_is_listed_with_its_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deps, "requirements", lambda: ["numpy>=1", "no-such-dist-xyz>=2,<3; python_version >= '3'"])
    assert deps.missing() == ["no-such-dist-xyz>=2,<3; python_version >= '3'"]
    assert deps.check() == ["missing: no-such-dist-xyz>=2,<3; python_version >= '3'"]


def test_check_and_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    expected = [] if torch.cuda.is_available() else ["no CUDA device visible to torch"]
    assert deps.check() == expected
    assert deps.main(["--check"]) == (0 if not expected else 1)
    assert capsys.readouterr().err.splitlines() == expected
    assert deps.main([]) == 0
    assert capsys.readouterr().out == ""
