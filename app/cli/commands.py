"""`serve`, `models`, `predict` and `explain`."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from app.cli.common import (
    UsageError,
    attribution_table,
    emit_json,
    explanation_record,
    fmt,
    out,
    overlay_names,
    parse_json_option,
    parse_target,
    render_options,
    slug,
    target_text,
)
from app.cli.inputs import instances
from app.client import Client
from app.config import Settings


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the service in this process, as `python -m app` does (the same draining server; torch
    is imported only here), or on a Ray cluster with `--ray`; flags over the environment."""

    overrides: dict[str, Any] = {}
    for name in ("host", "port", "models", "device", "log_level"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    for flag in ("replicas", "min_replicas", "max_replicas"):
        if getattr(args, flag) is not None:
            overrides[f"ray_{flag}"] = getattr(args, flag)
    if not args.ray and any(k.startswith("ray_") for k in overrides):
        raise UsageError("--replicas, --min-replicas and --max-replicas need --ray")
    settings = Settings(**overrides)
    if args.ray:
        from app.logs import configure

        configure(settings.log_format, settings.log_level)
        return serve_on_ray(settings)
    from app.__main__ import serve

    serve(settings)
    return 0


def serve_on_ray(settings: Settings) -> int:
    try:
        from app.deploy.options import ClusterConfigError
        from app.deploy.run import run
    except ImportError as exc:
        raise UsageError(f"--ray needs the ray extra (pip install '.[ray]'): {exc}") from exc
    try:
        run(settings)
    except ClusterConfigError as exc:
        raise UsageError(str(exc)) from exc
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


def cmd_predict(client: Client, args: argparse.Namespace) -> int:
    info = client.model(args.model)
    named = instances(info, args.inputs)
    predictions = client.predict(args.model, [x for _, x in named], top_k=args.top_k)
    if args.json:
        for (name, _), pred in zip(named, predictions, strict=True):
            emit_json({"input": name, "prediction": pred.to_json()})
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
            table.add_row(name, fmt(pred.value or 0.0))
            continue
        cells = [name, pred.label if pred.label is not None else str(pred.index), f"{(pred.score or 0) * 100:.1f}%"]
        if args.top_k:
            cells.append(", ".join(f"{c.label or c.index} {c.score * 100:.1f}%" for c in pred.top_k or []))
        table.add_row(*cells)
    out.print(table)
    return 0


def cmd_explain(client: Client, args: argparse.Namespace) -> int:
    info = client.model(args.model)
    named = instances(info, args.inputs)
    params = parse_json_option(args.params, "--params")
    target = parse_target(args.target)
    out_dir = Path(args.out) if args.out else None
    if info.kind == "image":
        outputs = ["overlay"] + (["heatmap"] if args.heatmap else [])
    else:
        outputs = ["summary"] + (["chart"] if out_dir else [])
    result = client.explain(args.model, [x for _, x in named], method=args.method, target=target,
                            params=params or None, outputs=outputs, render=render_options(args) or None,
                            top_k=args.top_k)
    if args.json:
        for (name, _), expl in zip(named, result.explanations, strict=True):
            emit_json(explanation_record(name, expl, result.method))
    if info.kind == "image":
        folder = out_dir or Path(".")
        files = overlay_names([name for name, _ in named])
        for (name, _), expl in zip(named, result.explanations, strict=True):
            path = expl.save_overlay(folder / files[name])
            extra = ""
            if args.heatmap:
                extra = f", heatmap {expl.save_heatmap(folder / files[name].replace('.overlay.', '.heatmap.'))}"
            if not args.json:
                out.print(f"{name}: {expl.prediction.describe()} (explained {target_text(expl)} "
                          f"with {result.method}) -> {path}{extra}")
        return 0
    if args.json:
        return 0
    for (name, _), expl in zip(named, result.explanations, strict=True):
        title = (f"{name}: {expl.prediction.describe()}, attributions for {target_text(expl)} "
                 f"({result.method})")
        out.print(title, style="bold", soft_wrap=True)
        out.print(attribution_table(expl, args.top))
        if expl.summary:
            out.print(expl.summary)
        if out_dir is not None and expl.chart:
            out.print(f"chart -> {expl.save_chart(out_dir / f'{slug(name)}.chart.png')}")
        out.print()
    return 0
