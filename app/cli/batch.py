"""`explain-batch`: a folder of images or a CSV of rows, with bounded concurrency, a progress
bar, overlays and a results.jsonl that makes a second run resume where the first one stopped."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from app.cli.common import (
    IMAGE_SUFFIXES,
    RESULTS_FILE,
    UsageError,
    err,
    explanation_record,
    out,
    overlay_names,
    parse_json_option,
    parse_target,
    render_options,
)
from app.cli.inputs import csv_row, read_csv
from app.client import APIError, Client, ModelInfo


@dataclass
class _Item:
    key: str | int
    load: Callable[[], Any]
    """Reads the instance (in the worker thread); raises ValueError/OSError for a bad item."""


def _source_kind(source: Path) -> str:
    if source.is_dir():
        return "image"
    if source.is_file() and source.suffix.lower() == ".csv":
        return "tabular"
    raise UsageError(f"{source}: expected a folder of images or a .csv file of rows")


def _batch_items(source: Path, key_column: str | None, info: ModelInfo) -> list[_Item]:
    """The items to explain; a CSV's header is checked against the model's features first."""
    if _source_kind(source) == "image":
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return [_Item(p.name, p.read_bytes) for p in files]
    return [_Item(key, partial(csv_row, cells, f"row {key}"))
            for key, cells in read_csv(source, key_column, info.features or [], info.name)]


def _load_results(path: Path) -> dict[str, dict[str, Any]]:
    """Existing records by key (last one wins); unreadable lines are ignored."""
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "key" in record:
            records[str(record["key"])] = record
    return records


def _write_results(path: Path, records: dict[str, dict[str, Any]], order: Sequence[str | int]) -> None:
    """One line per key: the source's order first, then keys no longer in the source."""
    keys = [str(k) for k in order]
    known = set(keys)
    lines = [json.dumps(records[k]) for k in keys if k in records]
    lines += [json.dumps(r) for k, r in records.items() if k not in known]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def _error_record(key: str | int, exc: Exception) -> dict[str, Any]:
    if isinstance(exc, APIError):
        error: dict[str, Any] = {"status": exc.status, "title": exc.title, "detail": exc.detail}
        if exc.errors:
            error["errors"] = exc.errors
    elif isinstance(exc, httpx.HTTPError):
        error = {"status": None, "title": type(exc).__name__, "detail": str(exc) or repr(exc)}
    else:
        error = {"status": None, "title": "Bad input", "detail": str(exc)}
    return {"key": key, "status": "error", "error": error}


def cmd_explain_batch(client: Client, args: argparse.Namespace) -> int:
    source = Path(args.source)
    kind = _source_kind(source)
    if args.key_column is not None and kind != "tabular":
        raise UsageError("--key-column is for CSV files")
    info = client.model(args.model)
    if info.kind != kind:
        raise UsageError(f"model '{args.model}' takes {info.kind} input, but {source} holds {kind} items")
    items = _batch_items(source, args.key_column, info)
    params = parse_json_option(args.params, "--params")
    target = parse_target(args.target)
    render = render_options(args) or None
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS_FILE
    records = _load_results(results_path)
    todo = [item for item in items if records.get(str(item.key), {}).get("status") != "ok"]
    skipped = len(items) - len(todo)
    overlay_files = overlay_names([str(item.key) for item in items]) if kind == "image" else {}
    outputs = ["overlay"] if kind == "image" else ["summary"] + (["chart"] if args.charts else [])

    def work(item: _Item) -> dict[str, Any]:
        try:
            instance = item.load()
            result = client.explain(args.model, [instance], method=args.method, target=target,
                                    params=params or None, outputs=outputs, render=render)
            expl = result.explanations[0]
            record = explanation_record(item.key, expl, result.method)
            if kind == "image":
                name = overlay_files[str(item.key)]
                expl.save_overlay(out_dir / name)
                record["overlay"] = name
            elif expl.chart:
                name = f"row-{item.key}.chart.png"
                expl.save_chart(out_dir / name)
                record["chart"] = name
            return record
        except (APIError, httpx.HTTPError, OSError, ValueError, TypeError) as exc:
            return _error_record(item.key, exc)

    failed: list[dict[str, Any]] = []
    done = 0
    interrupted = False
    with open(results_path, "a", encoding="utf-8") as log, Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=False, disable=args.quiet,
    ) as progress:
        task = progress.add_task(f"explain {args.model}", total=len(todo))
        pool = ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="explain")
        futures: list[Future[dict[str, Any]]] = [pool.submit(work, item) for item in todo]
        try:
            for future in as_completed(futures):
                record = future.result()
                records[str(record["key"])] = record
                log.write(json.dumps(record) + "\n")
                log.flush()
                if record["status"] == "ok":
                    done += 1
                else:
                    failed.append(record)
                    e = record["error"]
                    status = f"{e['status']} " if e["status"] else ""
                    progress.console.print(Text.assemble(("failed", "red"), f" {record['key']}: {status}"
                                                         f"{e['title']}: {e['detail']}"), soft_wrap=True)
                progress.advance(task)
        except KeyboardInterrupt:
            interrupted = True
            pool.shutdown(wait=True, cancel_futures=True)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    _write_results(results_path, records, [item.key for item in items])
    summary = (f"{done} explained, {len(failed)} failed, {skipped} already done "
               f"(of {len(items)}); results in {results_path}")
    out.print(summary, soft_wrap=True)
    if interrupted:
        err.print("interrupted: run the same command again to resume")
        return 130
    return 1 if failed else 0
