"""`explainserve` (also `python -m app.cli`): run the service, or call one from the shell.

    explainserve serve --device cpu                       # like `python -m app`, flags over env
    explainserve models
    explainserve predict purchase '{"age": 31, "monthly_spend": 420, ...}'
    explainserve explain shapes photo.png --out overlays/
    explainserve explain-batch shapes photos/ --out results/ --concurrency 8
    explainserve explain-batch purchase rows.csv --out results/

Global options `--url` (env EXPLAINSERVE_URL) and `--api-key` (env EXPLAINSERVE_API_KEY) go
before the command. Exit status: 0 on success, 1 when the service answered an error or an
item of a batch failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from app.client import DEFAULT_URL, APIError, Client, Explanation, ModelInfo

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
RESULTS_FILE = "results.jsonl"

# Not a terminal (a pipe, a test): rich would wrap at 80 columns; tables take what they need.
out = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, markup=False, width=None if sys.stderr.isatty() else 200)


def _emit_json(value: Any) -> None:
    """One JSON line on stdout, untouched by rich (for scripts and jq)."""
    sys.stdout.write(json.dumps(value) + "\n")


def _error(message: str) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


class UsageError(Exception):
    """A problem with the command line or its input files (exit status 2)."""


# --------------------------------------------------------------------------- inputs


def _parse_target(raw: str | None) -> Any:
    if raw is None:
        return None
    text = raw.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--target: {exc}") from None
    return text


def _parse_json_option(raw: str | None, name: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{name} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{name} must be a JSON object, e.g. '{{\"n_steps\": 16}}'")
    return value


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


def _csv_row(cells: dict[str, str], where: str) -> dict[str, float]:
    """A CSV row's cells as numbers; ValueError names the first cell that is not one."""
    row: dict[str, float] = {}
    for name, cell in cells.items():
        try:
            row[name] = float((cell or "").strip())
        except ValueError:
            raise ValueError(f"{where}, column '{name}': {cell!r} is not a number") from None
    return row


def _read_csv(path: Path, key_column: str | None = None) -> Iterator[tuple[str | int, dict[str, str]]]:
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


def _tabular_inputs(items: Sequence[str]) -> list[tuple[str, Any]]:
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
                    found = [_csv_row(cells, f"row {key}") for key, cells in _read_csv(path)]
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


def _image_inputs(items: Sequence[str]) -> list[tuple[str, bytes]]:
    images: list[tuple[str, bytes]] = []
    for item in items:
        if item == "-":
            images.append(("stdin", sys.stdin.buffer.read()))
            continue
        path = Path(item)
        if not path.is_file():
            raise UsageError(f"{item}: no such image file")
        images.append((path.name, path.read_bytes()))
    return images


# --------------------------------------------------------------------------- output helpers


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _slug(name: str) -> str:
    """A file-name-safe form of an input's name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "input"


def _signed(value: float) -> str:
    return f"{value:+.4g}"


def _bar(value: float, scale: float, width: int = 12) -> Text:
    if scale <= 0:
        return Text("")
    n = max(0, min(width, round(abs(value) / scale * width)))
    return Text("█" * n, style="green" if value >= 0 else "red")


def _attribution_table(expl: Explanation, top: int | None) -> Table:
    ranked = expl.ranked()
    shown = ranked[:top] if top else ranked
    scale = max((abs(a.attribution) for a in ranked), default=0.0)
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("feature")
    table.add_column("value", justify="right")
    table.add_column("attribution", justify="right")
    table.add_column("", no_wrap=True)
    for rank, a in enumerate(shown, start=1):
        table.add_row(str(rank), a.feature, _fmt(a.value), _signed(a.attribution), _bar(a.attribution, scale))
    return table


def _target_text(expl: Explanation) -> str:
    t = expl.target
    return t.label if t.label is not None else f"class {t.index}"


def _overlay_names(names: Sequence[str]) -> dict[str, str]:
    """Overlay file name per input name: `<stem>.overlay.png`, `<name>.overlay.png` on a clash."""
    stems: dict[str, int] = {}
    for name in names:
        stem = Path(name).stem
        stems[stem] = stems.get(stem, 0) + 1
    return {name: (f"{Path(name).stem}.overlay.png" if stems[Path(name).stem] == 1 else f"{name}.overlay.png")
            for name in names}


def _render_options(args: argparse.Namespace) -> dict[str, Any]:
    render: dict[str, Any] = {}
    if args.sign:
        render["sign"] = args.sign
    if args.colormap:
        render["colormap"] = args.colormap
    if args.alpha is not None:
        render["alpha"] = args.alpha
    if args.max_size is not None:
        render["max_size"] = args.max_size
    return render


# --------------------------------------------------------------------------- commands


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the service in this process (imports the server, hence torch, only here)."""
    import uvicorn

    from app.config import Settings
    from app.logs import configure
    from app.main import create_app

    overrides: dict[str, Any] = {}
    for name in ("host", "port", "models", "device", "log_level"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    settings = Settings(**overrides)
    configure(settings.log_format, settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5)
    return 0


def cmd_models(client: Client, args: argparse.Namespace) -> int:
    models = client.models()
    if args.json:
        out.print_json(json.dumps({"models": [asdict(m) for m in models]}))
        return 0
    table = Table(title=f"models at {client.base_url}", title_justify="left", box=box.SIMPLE)
    for column in ("name", "kind", "task", "device", "default method"):
        table.add_column(column, no_wrap=True)
    for m in models:
        table.add_row(m.name, m.kind, m.task, m.device, m.default_method)
    out.print(table)
    return 0


def _instances(info: ModelInfo, items: Sequence[str]) -> list[tuple[str, Any]]:
    if info.kind == "image":
        return list(_image_inputs(items))
    return _tabular_inputs(items)


def cmd_predict(client: Client, args: argparse.Namespace) -> int:
    info = client.model(args.model)
    named = _instances(info, args.inputs)
    predictions = client.predict(args.model, [x for _, x in named], top_k=args.top_k)
    if args.json:
        for (name, _), pred in zip(named, predictions, strict=True):
            _emit_json({"input": name, "prediction": pred.to_json()})
        return 0
    table = Table(title=f"{args.model} predictions", title_justify="left", min_width=30)
    table.add_column("input")
    if info.task == "regression":
        table.add_column("value", justify="right")
    else:
        table.add_column("label")
        table.add_column("score", justify="right")
        if args.top_k:
            table.add_column("top k")
    for (name, _), pred in zip(named, predictions, strict=True):
        if info.task == "regression":
            table.add_row(name, _fmt(pred.value or 0.0))
            continue
        cells = [name, pred.label if pred.label is not None else str(pred.index), f"{(pred.score or 0) * 100:.1f}%"]
        if args.top_k:
            cells.append(", ".join(f"{c.label or c.index} {c.score * 100:.1f}%" for c in pred.top_k or []))
        table.add_row(*cells)
    out.print(table)
    return 0


def cmd_explain(client: Client, args: argparse.Namespace) -> int:
    info = client.model(args.model)
    named = _instances(info, args.inputs)
    params = _parse_json_option(args.params, "--params")
    target = _parse_target(args.target)
    out_dir = Path(args.out) if args.out else None
    if info.kind == "image":
        outputs = ["overlay"] + (["heatmap"] if args.heatmap else [])
    else:
        outputs = ["summary"] + (["chart"] if out_dir else [])
    result = client.explain(args.model, [x for _, x in named], method=args.method, target=target,
                            params=params or None, outputs=outputs, render=_render_options(args) or None,
                            top_k=args.top_k)
    if args.json:
        for (name, _), expl in zip(named, result.explanations, strict=True):
            _emit_json(_record(name, expl, result.method))
    if info.kind == "image":
        folder = out_dir or Path(".")
        files = _overlay_names([name for name, _ in named])
        for (name, _), expl in zip(named, result.explanations, strict=True):
            path = expl.save_overlay(folder / files[name])
            extra = ""
            if args.heatmap:
                extra = f", heatmap {expl.save_heatmap(folder / files[name].replace('.overlay.', '.heatmap.'))}"
            if not args.json:
                out.print(f"{name}: {expl.prediction.describe()} (explained {_target_text(expl)} "
                          f"with {result.method}) -> {path}{extra}")
        return 0
    if args.json:
        return 0
    for (name, _), expl in zip(named, result.explanations, strict=True):
        title = (f"{name}: {expl.prediction.describe()}, attributions for {_target_text(expl)} "
                 f"({result.method})")
        out.print(title, style="bold", soft_wrap=True)
        out.print(_attribution_table(expl, args.top))
        if expl.summary:
            out.print(expl.summary)
        if out_dir is not None and expl.chart:
            out.print(f"chart -> {expl.save_chart(out_dir / f'{_slug(name)}.chart.png')}")
        out.print()
    return 0


def _record(key: str | int, expl: Explanation, method: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "key": key,
        "status": "ok",
        "prediction": expl.prediction.to_json(),
        "target": {"index": expl.target.index, "label": expl.target.label, "score": expl.target.score},
        "method": method,
        "convergence_delta": expl.convergence_delta,
    }
    if isinstance(expl.attributions, list):
        record["attributions"] = [{"feature": a.feature, "value": a.value, "attribution": a.attribution}
                                  for a in expl.attributions]
        record["top"] = [a.feature for a in expl.ranked()[:3]]
    if expl.summary:
        record["summary"] = expl.summary
    return record


# --------------------------------------------------------------------------- explain-batch


@dataclass
class _Item:
    key: str | int
    load: Callable[[], Any]
    """Reads the instance (in the worker thread); raises ValueError/OSError for a bad item."""


def _batch_items(source: Path, key_column: str | None) -> tuple[str, list[_Item]]:
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return "image", [_Item(p.name, p.read_bytes) for p in files]
    if source.is_file() and source.suffix.lower() == ".csv":
        items = [_Item(key, partial(_csv_row, cells, f"row {key}"))
                 for key, cells in _read_csv(source, key_column)]
        return "tabular", items
    raise UsageError(f"{source}: expected a folder of images or a .csv file of rows")


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
    kind, items = _batch_items(source, args.key_column)
    info = client.model(args.model)
    if info.kind != kind:
        raise UsageError(f"model '{args.model}' takes {info.kind} input, but {source} holds {kind} items")
    params = _parse_json_option(args.params, "--params")
    target = _parse_target(args.target)
    render = _render_options(args) or None
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS_FILE
    records = _load_results(results_path)
    todo = [item for item in items if records.get(str(item.key), {}).get("status") != "ok"]
    skipped = len(items) - len(todo)
    overlay_files = _overlay_names([str(item.key) for item in items]) if kind == "image" else {}
    outputs = ["overlay"] if kind == "image" else ["summary"] + (["chart"] if args.charts else [])

    def work(item: _Item) -> dict[str, Any]:
        try:
            instance = item.load()
            result = client.explain(args.model, [instance], method=args.method, target=target,
                                    params=params or None, outputs=outputs, render=render)
            expl = result.explanations[0]
            record = _record(item.key, expl, result.method)
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


# --------------------------------------------------------------------------- parser


def _add_explain_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", help="attribution method (default: the model's default_method)")
    parser.add_argument("--target", help="class to explain: index, label, or JSON list (default: predicted)")
    parser.add_argument("--params", help="method parameters as JSON, e.g. '{\"n_steps\": 16}'")
    parser.add_argument("--sign", choices=["absolute", "positive", "negative", "all"], help="image render sign")
    parser.add_argument("--colormap", help="image colour map (jet, viridis, inferno, bwr, ...)")
    parser.add_argument("--alpha", type=float, help="overlay opacity of the heatmap, 0-1")
    parser.add_argument("--max-size", type=int, help="longer side of the overlay in pixels")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="explainserve",
        description="Serve PyTorch models with Captum explanations, or call a running service.")
    parser.add_argument("--url", default=os.environ.get("EXPLAINSERVE_URL", DEFAULT_URL),
                        help="service URL (env EXPLAINSERVE_URL; default %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("EXPLAINSERVE_API_KEY"),
                        help="API key sent as a Bearer token (env EXPLAINSERVE_API_KEY)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the service (flags override the environment)")
    serve.add_argument("--host", help="bind address (env HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (env PORT, default 8000)")
    serve.add_argument("--models", help="catalog path (env MODELS, default models/catalog.toml)")
    serve.add_argument("--device", help="auto, cpu, cuda or cuda:N (env DEVICE, default auto)")
    serve.add_argument("--log-level", help="log level (env LOG_LEVEL, default INFO)")

    models = sub.add_parser("models", help="list the served models")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")

    predict = sub.add_parser("predict", help="predict for images or tabular rows")
    predict.add_argument("model")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image file; or a row as inline JSON, a .json or .csv file; '-' = stdin")
    predict.add_argument("--top-k", type=int, help="also list the k best classes")
    predict.add_argument("--json", action="store_true", help="print one JSON line per input")

    explain = sub.add_parser("explain", help="explain: overlay PNGs for images, ranked table for rows")
    explain.add_argument("model")
    explain.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image file; or a row as inline JSON, a .json or .csv file; '-' = stdin")
    _add_explain_options(explain)
    explain.add_argument("--out", help="folder for overlay PNGs (default: current folder); "
                                       "for tabular rows, also writes bar charts there")
    explain.add_argument("--heatmap", action="store_true", help="also write the heatmap PNG (images)")
    explain.add_argument("--top", type=int, help="show only the N strongest features (tabular)")
    explain.add_argument("--top-k", type=int, help="top-k classes in each prediction")
    explain.add_argument("--json", action="store_true", help="print one JSON line per input")

    batch = sub.add_parser("explain-batch", help="explain a folder of images or a CSV of rows, resumably")
    batch.add_argument("model")
    batch.add_argument("source", help="folder of images, or a .csv file whose header names the features")
    batch.add_argument("--out", required=True, help="folder for overlays and results.jsonl")
    batch.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    batch.add_argument("--key-column", help="CSV column naming each row (default: the row number)")
    batch.add_argument("--charts", action="store_true", help="also write a bar chart PNG per CSV row")
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_explain_options(batch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "concurrency", 1) < 1:
        parser.error("--concurrency must be at least 1")
    if args.command == "serve":
        return cmd_serve(args)
    commands: dict[str, Callable[[Client, argparse.Namespace], int]] = {
        "models": cmd_models,
        "predict": cmd_predict,
        "explain": cmd_explain,
        "explain-batch": cmd_explain_batch,
    }
    try:
        with Client(args.url, args.api_key, timeout=args.timeout,
                    retries=5 if args.command == "explain-batch" else 2) as client:
            return commands[args.command](client, args)
    except UsageError as exc:
        _error(str(exc))
        return 2
    except APIError as exc:
        _error(str(exc))
        for item in exc.errors[:10]:
            err.print(f"  {'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}", soft_wrap=True)
        return 1
    except httpx.HTTPError as exc:
        _error(f"cannot reach {args.url}: {exc or type(exc).__name__}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
