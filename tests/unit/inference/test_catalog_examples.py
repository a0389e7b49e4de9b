"""The catalog's optional `examples` key (the demo inputs of the built-in page), and the demo's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.inference.catalog import load_catalog
from models import train
from tests.conftest import CATALOG
from tests.unit.inference.test_catalog import (
    assert_names,
    catalog_error,
    image_entry,
    tabular_entry,
    write_catalog,
)


def _rows(path: Path, data: Any) -> str:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path.name


def test_examples_resolve_against_the_catalog_folder(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.new("RGB", (8, 8)).save(elsewhere / "b.jpg")
    rows = _rows(tmp_path / "rows.json", {"instances": [{"a": 1, "b": 2, "c": 3}, [1, 2, 3]]})
    path = write_catalog(tmp_path, tabular_entry(tmp_path, examples=[rows]),
                         image_entry(tmp_path, examples=["a.png", str(elsewhere / "b.jpg")]))
    tab, img = load_catalog(path)
    assert tab.examples == [tmp_path / "rows.json"]
    assert img.examples == [tmp_path / "a.png", elsewhere / "b.jpg"]


def test_examples_are_optional(tmp_path: Path) -> None:
    (spec,) = load_catalog(write_catalog(tmp_path, tabular_entry(tmp_path)))
    assert spec.examples == []


@pytest.mark.parametrize(("examples", "text"), [
    (["nope.json"], "file not found"),
    ("rows.json", "expected a list of path strings"),
    ([1], "expected a list of path strings"),
    (["picture.png"], "'picture.png' is not one of .json"),
    (["rows.json", "sub/rows.json"], "file names must be unique"),
    (["broken.json"], "broken.json is not valid JSON"),
    (["empty.json"], 'empty.json must hold {"instances": [row, ...]}'),
    (["scalars.json"], 'scalars.json must hold {"instances": [row, ...]}'),
])
def test_tabular_example_problems(tmp_path: Path, examples: Any, text: str) -> None:
    _rows(tmp_path / "rows.json", {"instances": [[1, 2, 3]]})
    (tmp_path / "sub").mkdir()
    _rows(tmp_path / "sub" / "rows.json", {"instances": [[1, 2, 3]]})
    (tmp_path / "broken.json").write_text("{oops", encoding="utf-8")
    _rows(tmp_path / "empty.json", {"instances": []})
    _rows(tmp_path / "scalars.json", {"instances": [1, 2]})
    Image.new("RGB", (8, 8)).save(tmp_path / "picture.png")
    message = catalog_error(write_catalog(tmp_path, tabular_entry(tmp_path, examples=examples)))
    assert_names(message, "tab", "examples")
    assert text in message, message


def test_image_examples_must_be_images(tmp_path: Path) -> None:
    rows = _rows(tmp_path / "rows.json", {"instances": [[1, 2, 3]]})
    message = catalog_error(write_catalog(tmp_path, image_entry(tmp_path, examples=[rows])))
    assert_names(message, "img", "examples")
    assert "'rows.json' is not one of .png, .jpg, .jpeg, .webp" in message


def test_every_demo_model_has_examples_that_fit_it() -> None:
    specs = load_catalog(CATALOG)
    for spec in specs:
        assert spec.examples, spec.name
        for path in spec.examples:
            if spec.kind == "image":
                with Image.open(path) as image:
                    image.verify()
                continue
            rows = json.loads(path.read_text(encoding="utf-8"))["instances"]
            assert rows and all(list(row) == spec.features for row in rows), path
            assert all(isinstance(v, int | float) for row in rows for v in row.values())


def test_the_committed_catalog_is_what_the_training_script_writes() -> None:
    """`make train` rewrites models/catalog.toml: the examples key must survive it."""
    assert train.render_catalog([demo.prepare() for demo in train.DEMOS]) == CATALOG.read_text(encoding="utf-8")
