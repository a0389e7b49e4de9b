"""The committed pictures are what the service answers today (docs/make_gallery.py renders them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from tests.conftest import ROOT


def _gallery() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_gallery", ROOT / "docs" / "make_gallery.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_committed_pictures_are_the_service_answers(tmp_path: Path) -> None:
    gallery = _gallery()
    written = gallery.render(tmp_path)
    assert len(written) == len(gallery.PICTURES) >= 5
    for path in written:
        committed = ROOT / "docs" / "img" / path.name
        assert committed.is_file(), f"{committed} is not committed: run docs/make_gallery.py"
        with Image.open(path) as new, Image.open(committed) as old:
            assert (new.mode, new.size) == (old.mode, old.size), path.name
            # colours may differ by a step where a float lands on the other side of a rounding
            diff = np.abs(np.asarray(new, dtype=np.int16) - np.asarray(old, dtype=np.int16))
            assert diff.mean() < 0.5 and (diff > 8).mean() < 0.001, path.name
    readme = (ROOT / "README.md").read_text()
    shown = [p.name for p in written if f"docs/img/{p.name}" in readme]
    assert len(shown) >= 3, "the README shows fewer than three of the pictures"
