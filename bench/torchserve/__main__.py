"""The TorchServe comparison (kept out of `make bench`: it sets up TorchServe; `make bench-torchserve`).

    python -m bench.torchserve                                  # -> bench/results/torchserve.md, .json
    python -m bench.torchserve --variants 1 --repetitions 1 --scale 0.3 --out /tmp/ts --note "smoke"

See bench/README.md ("Against TorchServe") for what is compared and how.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.catalogs import subset_catalog
from bench.cells import Client
from bench.common import RESULTS, log
from bench.machine import machine_info
from bench.report import describe_client
from bench.scenarios import image_pngs
from bench.torchserve import venv
from bench.torchserve.archive import build_model
from bench.torchserve.compare import CELLS, MODEL, Cell, request_bodies, run_comparison
from bench.torchserve.report import evaluate, render
from bench.torchserve.server import Variant
from bench.wrk import client_cpu, wrk_path


def _torchserve_version() -> str:
    out = subprocess.run([str(venv.python()), "-c", "import importlib.metadata as m; print(m.version('torchserve'))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def run(args: argparse.Namespace) -> dict[str, Any]:
    java = venv.java_version()
    if java < 11:
        raise SystemExit(f"TorchServe 0.12 needs Java 11 or later, found {java}")
    wrk_path()
    venv.ensure()
    variants = [Variant.parse(v) for v in args.variants.split(",") if v]
    client = Client("wrk", client_cpu(args.pin_client))
    service_env = dict(kv.split("=", 1) for kv in args.service_env)
    cells = tuple(Cell(c.kind, c.concurrency, c.duration_s * args.scale) for c in CELLS)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "note": args.note, "model": MODEL,
        "machine": machine_info("cpu"), "loadavg_start": list(os.getloadavg()),
        "settings": {"torchserve": _torchserve_version(), "java": java, "repetitions": args.repetitions,
                     "variants": [{"name": v.name, **asdict(v)} for v in variants],
                     "load_generator": describe_client(client.as_dict()), "service_env": service_env,
                     "cells": [{"key": c.key, **asdict(c)} for c in cells],
                     "our_service": {"torch": importlib.metadata.version("torch")}},
    }
    with tempfile.TemporaryDirectory(prefix="bench-torchserve-") as tmp:
        folder = Path(tmp)
        catalog = subset_catalog([MODEL], folder)
        (entry,) = tomllib.loads(catalog.read_text(encoding="utf-8"))["models"]
        log(f"model archive of {entry['weights']}")
        build_model(Path(entry["weights"]), folder / "store", MODEL)
        bodies = request_bodies(image_pngs((224, 224)))
        result.update(run_comparison(catalog=catalog, weights_store=folder / "store", folder=folder,
                                     variants=variants, repetitions=args.repetitions, bodies=bodies, client=client,
                                     service_env=service_env, cells=cells, drain=args.drain))
    result["loadavg_end"] = list(os.getloadavg())
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    result["targets"] = evaluate(result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.torchserve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="1,2,2x1",
                        help="TorchServe set-ups: workers, or workers x threads each (default 1,2,2x1)")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every cell's duration")
    parser.add_argument("--drain", type=float, default=120.0, help="most seconds to wait for in-flight requests")
    parser.add_argument("--pin-client", default="auto", metavar="auto|none|CPU")
    parser.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS / "torchserve", help="results path without suffix")
    parser.add_argument("--note", default="", help="free text recorded with the results")
    args = parser.parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(render(result), encoding="utf-8")
    log(f"wrote {args.out.with_suffix('.md')} and .json in {result['total_seconds']} s")
    sys.stdout.write(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
