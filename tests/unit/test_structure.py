"""The rules the design depends on (docs/architecture.md), checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

APP = ROOT / "app"
MODULES = sorted(p for p in APP.rglob("*.py") if "ui/static" not in str(p))
KIND_HOMES = {APP / "kinds", APP / "inference" / "catalog.py"}
"""Where what a kind means may be written: the kind modules and the catalog."""
CLIENT_SIDE = {APP / "cli", APP / "client"}
"""The command line and the Python client adapt to what a model is: they are the service's clients."""
MAX_LINES = 300


def _within(path: Path, places: set[Path]) -> bool:
    return any(path == place or place in path.parents for place in places)


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(ROOT)) for p in MODULES])
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by concept"


def _kind_branches(tree: ast.AST) -> list[int]:
    """Lines comparing something with a kind's name ("tabular", "image")."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value in ("tabular", "image") for o in operands):
                found.append(node.lineno)
    return found


def test_no_branch_on_the_input_kind_outside_the_kinds_and_the_catalog() -> None:
    offenders = {}
    for path in MODULES:
        if _within(path, KIND_HOMES | CLIENT_SIDE):
            continue
        lines = _kind_branches(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            offenders[str(path.relative_to(ROOT))] = lines
    assert offenders == {}


def test_the_checker_finds_a_branch_on_the_kind() -> None:
    assert _kind_branches(ast.parse('if spec.kind == "image":\n    pass\n')) == [1]
    assert _kind_branches(ast.parse('x = {"image": 1}\n')) == []


@pytest.mark.parametrize("layer", ["api", "render", "kinds", "client", "cli"])
def test_layers_without_torch_do_not_import_it(layer: str) -> None:
    for path in sorted((APP / layer).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "torch" or n.startswith(("torch.", "captum")) for n in names), \
                f"{path.relative_to(ROOT)} imports {names}"


def test_only_the_deploy_package_imports_ray() -> None:
    for path in MODULES:
        if _within(path, {APP / "deploy"}):
            continue
        text = path.read_text(encoding="utf-8")
        assert "import ray" not in text and "from ray" not in text, path
