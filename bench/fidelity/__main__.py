"""python -m bench.fidelity: see bench/fidelity/__init__.py."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.common import RESULTS, log
from bench.fidelity.images import shapes_table
from bench.fidelity.report import render
from bench.fidelity.tabular import convergence, kernel_shap_ranking
from bench.machine import machine_info


def _load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100, help="generated shapes images")
    parser.add_argument("--rows", type=int, default=40, help="held-out rows per tabular model (IG convergence)")
    parser.add_argument("--shap-rows", type=int, default=20, help="held-out rows per model (Kernel SHAP)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite fidelity.md (and the notes in fidelity.json) from fidelity.json and "
                        "bench/fidelity/notes.md, without measuring")
    args = parser.parse_args(argv)
    notes = Path(__file__).with_name("notes.md")
    if args.render_only:
        results = json.loads((args.out / "fidelity.json").read_text())
        results["notes"] = notes.read_text().splitlines() if notes.is_file() else []
        (args.out / "fidelity.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "fidelity.md").write_text(render(results))
        return
    started, load_start = time.perf_counter(), _load()
    results = {"machine": machine_info("cpu"), "load_start": load_start,
               "images": shapes_table(args.images), "convergence": convergence(args.rows),
               "sampling": kernel_shap_ranking(args.shap_rows)}
    results |= {"load_end": _load(), "wall_s": time.perf_counter() - started,
                "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    results["notes"] = notes.read_text().splitlines() if notes.is_file() else []
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fidelity.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "fidelity.md").write_text(render(results))
    log(f"fidelity: wrote {args.out / 'fidelity.md'}")


if __name__ == "__main__":
    main()
