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
    assert "docs/gallery.md" in readme


def test_the_gallery_page_shows_every_image_method_on_every_gallery_image() -> None:
    gallery = _gallery()
    page = (ROOT / "docs" / "gallery.md").read_text()
    assert page == gallery.gallery_markdown(), "docs/gallery.md is stale: run docs/make_gallery.py"
    from app.inference.methods import METHODS

    image_methods = {name for name, method in METHODS.items() if "image" in method.kinds}
    assert set(gallery.IMAGE_METHODS) == image_methods
    for picture in gallery.GRID:
        assert f"img/{picture.name}.png" in page
    assert len(gallery.GRID) == len(image_methods) * len(gallery.GRID_SOURCES) and len(gallery.PHOTOS) >= 2
