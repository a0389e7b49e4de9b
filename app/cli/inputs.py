"""Command-line inputs: image files, and tabular rows as inline JSON, JSON files or CSV files."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from app.cli.common import UsageError
from app.client import ModelInfo


def _rows_from_json(value: Any, source: str) -> list[Any]:
    """Tabular rows from parsed JSON: one row (object or list of numbers), a list of rows, or
    `{"instances": [...]}`."""
    if isinstance(value, dict) and isinstance(value.get("instances"), list):
        return list(value["instances"])
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return [value]
    if isinstance(value, list) and value:
        return value
    raise UsageError(f"{source}: expected a row (object or list of numbers), a list of rows, "
                     "or {\"instances\": [...]}")


def csv_row(cells: dict[str, str], where: str) -> dict[str, float]:
    """A CSV row's cells as numbers; ValueError names the first cell that is not one."""
    row: dict[str, float] = {}
    for name, cell in cells.items():
        try:
            row[name] = float((cell or "").strip())
        except ValueError:
            raise ValueError(f"{where}, column '{name}': {cell!r} is not a number") from None
    return row


def read_csv(path: Path, key_column: str | None = None) -> Iterator[tuple[str | int, dict[str, str]]]:
    """(key, raw cells by header name) per data row; key = `key_column`'s value or the row number."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise UsageError(f"{path}: empty CSV (the header must name the features)")
        if key_column is not None and key_column not in reader.fieldnames:
            raise UsageError(f"{path}: no column '{key_column}' for --key-column")
        for number, cells in enumerate(reader, start=1):
            key: str | int = cells.pop(key_column) if key_column is not None else number
            yield key, {k: v for k, v in cells.items() if k is not None}


def tabular_inputs(items: Sequence[str]) -> list[tuple[str, Any]]:
    """(name, row) pairs from inline JSON, JSON files, CSV files or `-` (JSON on stdin).

    Inline rows are named `row N`; rows from a file `<file>` (one row) or `<file>:N`.
    """
    rows: list[tuple[str, Any]] = []
    inline = 0
    for item in items:
        if item.strip().startswith(("{", "[")):
            for row in _rows_from_json(_load_json(item, "argument"), "argument"):
                inline += 1
                rows.append((f"row {inline}", row))
            continue
        if item == "-":
            source, found = "stdin", _rows_from_json(_load_json(sys.stdin.read(), "stdin"), "stdin")
        else:
            path = Path(item)
            if not path.is_file():
                raise UsageError(f"{item}: not a file, and not inline JSON")
            source = path.name
            if path.suffix.lower() == ".csv":
                try:
                    found = [csv_row(cells, f"row {key}") for key, cells in read_csv(path)]
                except ValueError as exc:
                    raise UsageError(f"{path}: {exc}") from None
            else:
                found = _rows_from_json(_load_json(path.read_text(encoding="utf-8"), source), source)
        rows += [(source if len(found) == 1 else f"{source}:{i}", row) for i, row in enumerate(found, start=1)]
    return rows


def _load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}: not valid JSON: {exc}") from None


def image_inputs(items: Sequence[str]) -> list[tuple[str, bytes]]:
    """(name, bytes) per image file (`-` = stdin); a repeated file name gets a `-N` suffix."""
    images: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for item in items:
        if item == "-":
            name, data = "stdin", sys.stdin.buffer.read()
        else:
            path = Path(item)
            if not path.is_file():
                raise UsageError(f"{item}: no such image file")
            name, data = path.name, path.read_bytes()
        unique, n = name, 1
        while unique in seen:
            n += 1
            unique = f"{Path(name).stem}-{n}{Path(name).suffix}"
        seen.add(unique)
        images.append((unique, data))
    return images


def instances(info: ModelInfo, items: Sequence[str]) -> list[tuple[str, Any]]:
    if info.kind == "image":
        return list(image_inputs(items))
    return tabular_inputs(items)
