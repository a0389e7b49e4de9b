"""`explainserve` (also `python -m app.cli`): run the service, or call one from the shell.

    explainserve serve --device cpu                       # like `python -m app`, flags over env
    explainserve serve --ray --replicas 2                 # on Ray Serve (RAY_ADDRESS, or a local cluster)
    explainserve models
    explainserve predict purchase '{"age": 31, "monthly_spend": 420, ...}'
    explainserve explain shapes photo.png --out overlays/
    explainserve explain-batch shapes photos/ --out results/ --concurrency 8
    explainserve explain-batch purchase rows.csv --out results/

Options `--url` (env EXPLAINSERVE_URL) and `--api-key` (env EXPLAINSERVE_API_KEY) go before or
after the command. Exit status: 0 on success, 1 when the service answered an error or an
item of a batch failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

import httpx

from app.cli.batch import cmd_explain_batch
from app.cli.commands import cmd_explain, cmd_models, cmd_predict, cmd_serve
from app.cli.common import UsageError, err, print_error
from app.client import DEFAULT_URL, APIError, Client

__all__ = ["build_parser", "main"]


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
    # The same options after the command name too (`explainserve models --url ...`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="service URL (env EXPLAINSERVE_URL)")
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="API key (env EXPLAINSERVE_API_KEY)")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help="seconds per request")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the service (flags override the environment)")
    serve.add_argument("--host", help="bind address (env HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (env PORT, default 8000)")
    serve.add_argument("--models", help="catalog path (env MODELS, default models/catalog.toml)")
    serve.add_argument("--device", help="auto, cpu, cuda or cuda:N (env DEVICE, default auto)")
    serve.add_argument("--log-level", help="log level (env LOG_LEVEL, default INFO)")
    cluster = serve.add_argument_group("cluster mode (needs the ray extra: pip install '.[ray]')")
    cluster.add_argument("--ray", action="store_true",
                         help="serve on Ray Serve: a replica per device of the cluster at RAY_ADDRESS "
                              "(none: a local cluster), HTTP on --host/--port")
    cluster.add_argument("--replicas", type=int, help="fixed replica count (env RAY_REPLICAS, default 1)")
    cluster.add_argument("--min-replicas", type=int, help="autoscaling: fewest replicas (env RAY_MIN_REPLICAS)")
    cluster.add_argument("--max-replicas", type=int,
                         help="autoscaling on ongoing requests up to this many replicas (env RAY_MAX_REPLICAS)")

    models = sub.add_parser("models", parents=[common], help="list the served models")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")

    predict = sub.add_parser("predict", parents=[common], help="predict for images or tabular rows")
    predict.add_argument("model")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image file; or a row as inline JSON, a .json or .csv file; '-' = stdin")
    predict.add_argument("--top-k", type=int, help="also list the k best classes")
    predict.add_argument("--json", action="store_true", help="print one JSON line per input")

    explain = sub.add_parser("explain", parents=[common],
                             help="explain: overlay PNGs for images, ranked table for rows")
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

    batch = sub.add_parser("explain-batch", parents=[common],
                           help="explain a folder of images or a CSV of rows, resumably")
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
        try:
            return cmd_serve(args)
        except UsageError as exc:
            print_error(str(exc))
            return 2
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
        print_error(str(exc))
        return 2
    except APIError as exc:
        print_error(str(exc))
        for item in exc.errors[:10]:
            err.print(f"  {'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}", soft_wrap=True)
        return 1
    except httpx.HTTPError as exc:
        print_error(f"cannot reach {args.url}: {exc or type(exc).__name__}")
        return 1
