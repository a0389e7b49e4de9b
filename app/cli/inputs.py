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
from app.errors import did_you_mean


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


def check_header(path: Path, header: Sequence[str], features: Sequence[str], key_column: str | None,
                 model: str) -> None:
    """The header names every feature and nothing else but the key column; else one usage error
    that says how to fix the file or the command."""
    declared = set(features)
    missing = [f for f in features if f not in header]
    extra = [c for c in header if c not in declared and c != key_column]
    if not missing and not extra:
        return
    problems = []
    if missing:
        named = [f"'{f}'" + did_you_mean(f, extra).replace("did you mean", "is it the column") for f in missing]
        problems.append(f"the header lacks {len(missing)} of model '{model}'s features: {', '.join(named)}")
    if extra and key_column is None and len(extra) == 1 and not missing:
        problems.append(f"column '{extra[0]}' is not a feature of model '{model}': to name the rows by it, "
                        f"add --key-column {extra[0]}")
    elif extra:
        problems.append(f"{'columns' if len(extra) > 1 else 'column'} {', '.join(repr(c) for c in extra)} "
                        f"{'are' if len(extra) > 1 else 'is'} not {'features' if len(extra) > 1 else 'a feature'} "
                        f"of model '{model}'" + (" (one of them may be --key-column)" if key_column is None else ""))
    raise UsageError(f"{path}: " + "; ".join(problems) + f". The header must name the features "
                     f"({', '.join(features)}) and at most one key column.")


def read_csv(path: Path, key_column: str | None = None, features: Sequence[str] | None = None,
             model: str = "") -> Iterator[tuple[str | int, dict[str, str]]]:
    """(key, raw cells by header name) per data row; key = `key_column`'s value or the row number.

    Spaces around header names and cells are ignored (`age, monthly_spend` is read as
    `age,monthly_spend`); with `features`, the header is checked before any row is read.
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        if not reader.fieldnames:
            raise UsageError(f"{path}: empty CSV (the header must name the features)")
        reader.fieldnames = [name.strip() for name in reader.fieldnames]
        if key_column is not None and key_column not in reader.fieldnames:
            raise UsageError(f"{path}: no column '{key_column}' for --key-column "
                             f"(the header has {', '.join(reader.fieldnames)})")
        if features is not None:
            check_header(path, reader.fieldnames, features, key_column, model)
        for number, cells in enumerate(reader, start=1):
            key: str | int = cells.pop(key_column) if key_column is not None else number
            yield key, {k: v for k, v in cells.items() if k is not None}


def tabular_inputs(items: Sequence[str], info: ModelInfo | None = None) -> list[tuple[str, Any]]:
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
                    rows_read = read_csv(path, None, info.features if info else None, info.name if info else "")
                    found = [csv_row(cells, f"row {key}") for key, cells in rows_read]
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
    return tabular_inputs(items, info)
