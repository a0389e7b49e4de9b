"""The serve entry sets OpenMP's wait policy before torch loads (it reads it only then)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = """
import os, sys
import app.__main__, app.cli
assert "torch" not in sys.modules, "the serve entry imports torch before it applies OMP_WAIT_POLICY"
from app.config import Settings
app.__main__.apply_openmp(Settings())
print(os.environ["OMP_WAIT_POLICY"])
"""


@pytest.mark.parametrize(("given", "applied"), [(None, "PASSIVE"), ("active", "ACTIVE"), ("PASSIVE", "PASSIVE")])
def test_the_wait_policy_is_applied_before_torch_loads(given: str | None, applied: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == applied
