"""Two builds or two settings of our service side by side: which costs less CPU a request.

`python -m bench.ab --base REF` starts our service twice, from the commit REF (exported with `git
archive` into a temporary folder) as A and from this checkout as B; without `--base` both run
this checkout, A with `--env-a` settings and B with `--env-b`. Both load the same catalog (this
checkout's bench/catalog.toml, its weights) and stay up; then each round loads one and then the
other with wrk for `--seconds`, the order alternating, and samples each server's CPU over its
window (bench/procstat.py).

Why: on this shared host a 10 s cell's CPU per request moves by 10-15% from one cell to the next
(other tenants), more than most changes. Windows of a few seconds taken in turn see nearly the
same host, so the ratio of a round's two windows moves far less than either: the report's measure
is the median over the rounds of B's CPU per request over A's, with how many rounds B was the
cheaper (the thirteenth session's paired figures in bench/results/history.md were taken this way).

Writes bench/results/ab.md (or `--out`), each round's figures and the summary.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.catalogs import subset_catalog
from bench.cells import Client, run_cell
from bench.common import RESULTS, ROOT, log
from bench.scenarios import SCENARIOS, Scenario, make_bodies
from bench.servers import Server, start_ours

__all__ = ["Window", "export_commit", "paired_summary", "run_ab"]


@dataclass(frozen=True)
class Window:
    """One server's share of a round."""

    cpu_ms: float
    """Server CPU (every thread and child process) per answered request."""
    event_loop_ms: float
    requests_per_s: float
    errors: int


def paired_summary(a: Sequence[Window], b: Sequence[Window]) -> dict[str, Any]:
    """The rounds' B/A ratios of CPU per request (and of the event loop's), their medians, and
    how many rounds B was the cheaper."""
    if len(a) != len(b) or not a:
        raise ValueError("one window of each server per round, at least one round")
    ratios = [wb.cpu_ms / wa.cpu_ms for wa, wb in zip(a, b, strict=True)]
    loop_ratios = [wb.event_loop_ms / wa.event_loop_ms for wa, wb in zip(a, b, strict=True) if wa.event_loop_ms > 0]
    return {"rounds": len(ratios), "ratios": ratios, "median_ratio": statistics.median(ratios),
            "b_cheaper": sum(r < 1.0 for r in ratios),
            "median_event_loop_ratio": statistics.median(loop_ratios) if loop_ratios else None,
            "median_cpu_ms": (statistics.median(w.cpu_ms for w in a), statistics.median(w.cpu_ms for w in b)),
            "median_requests_per_s": (statistics.median(w.requests_per_s for w in a),
                                      statistics.median(w.requests_per_s for w in b))}


def export_commit(ref: str, folder: Path) -> str:
    """The tracked files of `ref` written into `folder`; returns the commit's short hash."""
    commit = subprocess.run(["git", "rev-parse", "--short", f"{ref}^{{commit}}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    archive = folder / "source.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), commit], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    archive.unlink()
    return commit


def _window(server: Server, scenario: Scenario, bodies: list[bytes], concurrency: int, seconds: float) -> Window:
    cell = run_cell(server, scenario, bodies, concurrency, seconds, max_requests=1_000_000, drain=30.0,
                    client=Client("wrk"))
    cpu = cell["server_cpu"]
    return Window(cpu["ms_per_request"], cpu["groups_ms_per_request"]["event loop"], cell["throughput_rps"],
                  sum(cell["errors"].values()) + cell["unfinished"])


def run_ab(*, base: str | None, scenario: str, concurrency: int, rounds: int, seconds: float,
           env_a: dict[str, str], env_b: dict[str, str]) -> dict[str, Any]:
    chosen = SCENARIOS[scenario]
    bodies = make_bodies(chosen)
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        folder = Path(tmp)
        a_root, a_name = ROOT, "this checkout"
        if base is not None:
            (folder / "base").mkdir()
            a_root, a_name = folder / "base", export_commit(base, folder / "base")
        catalog = subset_catalog([chosen.model], folder)
        servers = [start_ours("cpu", catalog, env_a, folder, name="a", root=a_root),
                   start_ours("cpu", catalog, env_b, folder, name="b")]
        try:
            for server in servers:
                server.wait_ready(300)
            for server in servers:  # warm both (first requests pay for lazy set-up)
                _window(server, chosen, bodies, concurrency, min(seconds, 2.0))
            windows: dict[str, list[Window]] = {"a": [], "b": []}
            for i in range(rounds):
                for server in servers if i % 2 == 0 else servers[::-1]:
                    windows[server.name].append(_window(server, chosen, bodies, concurrency, seconds))
                wa, wb = windows["a"][-1], windows["b"][-1]
                log(f"round {i + 1}/{rounds}: A {wa.cpu_ms:.3f} ms, B {wb.cpu_ms:.3f} ms a request "
                    f"(B/A {wb.cpu_ms / wa.cpu_ms:.3f})")
        except BaseException:
            for server in servers:
                log(f"{server.name} log:\n{server.tail()}")
            raise
        finally:
            for server in servers:
                server.stop()
    return {"a": a_name, "b": "this checkout", "scenario": scenario, "concurrency": concurrency,
            "seconds": seconds, "env_a": env_a, "env_b": env_b, "windows": windows,
            "summary": paired_summary(windows["a"], windows["b"]), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def render(result: dict[str, Any]) -> str:
    s = result["summary"]
    settings = "".join(f" {side.upper()} with {' '.join(f'{k}={v}' for k, v in env.items())};"
                       for side, env in (("a", result["env_a"]), ("b", result["env_b"])) if env)
    lines = [f"# A/B: {result['scenario']} at {result['concurrency']} concurrent", "",
             f"Run {result['at']}: A = {result['a']}, B = {result['b']};{settings} {s['rounds']} rounds of "
             f"{result['seconds']:g} s windows, the order alternating (`python -m bench.ab`).", "",
             f"**B/A, CPU per request: median {s['median_ratio']:.3f}** (B the cheaper in {s['b_cheaper']} of "
             f"{s['rounds']} rounds); event loop thread {s['median_event_loop_ratio'] or float('nan'):.3f}. "
             f"Medians: A {s['median_cpu_ms'][0]:.3f} ms and {s['median_requests_per_s'][0]:.0f} req/s, "
             f"B {s['median_cpu_ms'][1]:.3f} ms and {s['median_requests_per_s'][1]:.0f} req/s.", "",
             "| round | A ms/req | A event loop | A req/s | B ms/req | B event loop | B req/s | B/A | errors A / B |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, (wa, wb) in enumerate(zip(result["windows"]["a"], result["windows"]["b"], strict=True)):
        lines.append(f"| {i + 1} | {wa.cpu_ms:.3f} | {wa.event_loop_ms:.3f} | {wa.requests_per_s:.0f} | "
                     f"{wb.cpu_ms:.3f} | {wb.event_loop_ms:.3f} | {wb.requests_per_s:.0f} | "
                     f"{wb.cpu_ms / wa.cpu_ms:.3f} | {wa.errors} / {wb.errors} |")
    return "\n".join(lines) + "\n"


def _settings(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"settings are KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="a commit for A (default: this checkout, with --env-a)")
    parser.add_argument("--scenario", default="shapes-gradcam", choices=sorted(SCENARIOS))
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--env-a", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--env-b", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS / "ab.md")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.concurrency < 1:
        parser.error("rounds, seconds and concurrency must be positive")
    result = run_ab(base=args.base, scenario=args.scenario, concurrency=args.concurrency, rounds=args.rounds,
                    seconds=args.seconds, env_a=_settings(args.env_a), env_b=_settings(args.env_b))
    text = render(result)
    args.out.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
