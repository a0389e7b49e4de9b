"""The results markdown (`bench/results/<name>.md`), rendered from the results JSON alone.

    python -m bench.report bench/results/*.json     # re-render the markdown beside each file
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.answers import OVERLAY_MAX_STEP, OVERLAY_MEAN_STEP
from bench.procstat import GROUPS

__all__ = ["cpu_group_row", "describe_client", "fmt", "render_markdown"]


def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    """A number for a table cell; "–" for a missing or NaN one."""
    if value is None or value != value:
        return "–"
    return f"{value:{spec}}{suffix}"


def describe_client(gen: dict[str, Any]) -> str:
    """The load generator in words, from its record (`{"kind": "wrk", "pin_cpu": 3}`)."""
    if gen["kind"] == "wrk":
        pin = gen.get("pin_cpu")
        return "wrk (1 thread" + (f", pinned to CPU {pin})" if pin is not None else ")")
    return f"Python ({gen['kind']} client)"


def _cells(result: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, entry in result["scenarios"].items():
        for cell in entry["cells"]:
            yield name, cell


def _tail(server: dict[str, Any]) -> float | None:
    lat = server["latency_ms"] or {}
    return lat["p99"] / lat["p50"] if lat.get("p50") else None


def _header(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    s = result["service_settings"]
    return [
        f"# Benchmark: {m['device_name']} ({m['device']})", "",
        f"Run {result['created']}, commit {m.get('git_commit', '?')}, {result['total_seconds']} s in all."
        + (f" Note: {result['note']}" if result.get("note") else ""), "",
        f"- Machine: {m['cpu_count']} CPUs ({m['cpu_model']}), {m.get('memory_gib', '?')} GiB, "
        f"Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), captum {m['captum']}"
        + (f", CUDA {m['cuda']}, {m['gpu_memory_gib']} GiB" if "cuda" in m else ""),
        f"- Load average (1/5/15 min) at start {', '.join(f'{x:.2f}' for x in result['loadavg_start'])}, "
        f"at end {', '.join(f'{x:.2f}' for x in result['loadavg_end'])} "
        "(the host is shared: other processes compete for the same cores)",
        f"- Our service: MAX_BATCH_SIZE={s['max_batch_size']}, MAX_BATCH_ROWS={s['max_batch_rows']}, "
        f"MAX_BATCH_DELAY_MS={s['max_batch_delay_ms']}, WORKERS_PER_DEVICE={s['workers_per_device']}"
        + (f", CPU_CHUNK_MB={s['cpu_chunk_mb']}" if "cpu_chunk_mb" in s else "")
        + (f", overrides {s['env_overrides']}" if s["env_overrides"] else ""),
        f"- Naive server: {result['naive_mode']}; load generator: {describe_client(result['load_generator'])}; "
        f"cells of {result['cell_duration_s']} s "
        "(bounded by time and request count; in-flight requests are drained and counted)",
        *([f"- Random weights (seeded initialisation of the builder, weights file not used): "
           f"{', '.join(result['random_weights'])}"] if result.get("random_weights") else []),
        "",
    ]


def _targets(result: dict[str, Any]) -> list[str]:
    lines = ["## Targets", "", "| target | scenario | value | threshold | |", "|---|---|---|---|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['scenario']} | {t['value']} | {t['threshold']} | "
                     f"{'PASS' if t['pass'] else 'FAIL'} |")
    if not result["targets"]:
        lines.append("| (none measured) | | | | |")
    return lines


def _results(result: dict[str, Any]) -> list[str]:
    lines = ["", "## Results", "",
             "Throughput in requests/s (one instance per request); attribution rows/s = requests/s x rows "
             "per request (IG: n_steps, GradCAM: 1); efficiency = our rows/s / roofline rows/s; p99/p50: "
             "each server's p99 over its own p50 in the cell.", "",
             "| scenario | conc | ours req/s | naive req/s | ratio | ours p50 / p99 ms | naive p50 / p99 ms "
             "| p99/p50 ours / naive | p50 ratio | ours rows/s | efficiency | errors ours / naive | n ours / naive "
             "| load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in _cells(result):
        o, n = c["ours"], c["naive"]
        lo, ln = o["latency_ms"] or {}, n["latency_ms"] or {}
        tb = " (t)" if o["time_bounded"] or n["time_bounded"] else ""
        lines.append(
            f"| {name} | {c['concurrency']} | {fmt(o['throughput_rps'], '.2f')} | "
            f"{fmt(n['throughput_rps'], '.2f')} | {fmt(c['ratio'], '.2f', 'x')} | "
            f"{fmt(lo.get('p50'))} / {fmt(lo.get('p99'))} | {fmt(ln.get('p50'))} / {fmt(ln.get('p99'))} | "
            f"{fmt(_tail(o), '.1f', 'x')} / {fmt(_tail(n), '.1f', 'x')} | "
            f"{fmt(c.get('p50_ratio'), '.2f', 'x')} | {fmt(o['rows_per_s'], ',.0f')} | "
            f"{fmt(c['efficiency'] * 100 if c['efficiency'] is not None else None, '.1f', '%')} | "
            f"{sum(o['errors'].values())} / {sum(n['errors'].values())} | {o['ok']} / {n['ok']}{tb} | "
            f"{c['loadavg'][0]:.1f} |")
    return lines + ["", "(t): the cell's time bound, not its request count, ended it."]


def _time(result: dict[str, Any]) -> list[str]:
    lines = ["", "## Where our time goes (means of `timings_ms` in sampled answers)", "",
             "Server CPU ms per request is the server's CPU time (all its threads and child processes) over "
             "the cell divided by the answers; cores busy is that CPU time over the cell's wall time; client "
             "CPU is the load generator's own. On a shared host these are steadier than wall-clock numbers.", "",
             "| scenario | conc | queue ms | compute ms | render ms | total ms | server CPU ms/req ours / naive "
             "| cores busy ours / naive | client CPU ms/req ours / naive | bytes/response ours / naive |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in _cells(result):
        t = c["ours"].get("sampled") or {}
        so, sn = c["ours"].get("server_cpu") or {}, c["naive"].get("server_cpu") or {}
        lines.append(f"| {name} | {c['concurrency']} | {fmt(t.get('queue'))} | {fmt(t.get('compute'))} | "
                     f"{fmt(t.get('render'))} | {fmt(t.get('total'))} | "
                     f"{fmt(so.get('ms_per_request'), '.2f')} / {fmt(sn.get('ms_per_request'), '.2f')} | "
                     f"{fmt(so.get('cores_busy'), '.2f')} / {fmt(sn.get('cores_busy'), '.2f')} | "
                     f"{fmt(c['ours'].get('client_cpu_ms_per_request'), '.2f')} / "
                     f"{fmt(c['naive'].get('client_cpu_ms_per_request'), '.2f')} | "
                     f"{fmt(c['ours']['bytes_per_response'], ',.0f')} / "
                     f"{fmt(c['naive']['bytes_per_response'], ',.0f')} |")
    return lines


def recorded_groups(servers_cpu: list[dict[str, Any]]) -> tuple[str, ...]:
    """The thread groups a run recorded (a run keeps the groups of its day), else today's."""
    for server_cpu in servers_cpu:
        if server_cpu.get("groups_ms_per_request"):
            return tuple(server_cpu["groups_ms_per_request"])
    return GROUPS


def cpu_group_row(label: str, server_cpu: dict[str, Any], names: tuple[str, ...] = GROUPS) -> str | None:
    """One table row of ms per request by thread group, or None when the groups were not recorded."""
    groups = server_cpu.get("groups_ms_per_request")
    if not groups:
        return None
    children = ", ".join(f"{k} {v:.2f}" for k, v in server_cpu.get("children_ms_per_request", {}).items()
                         if abs(v) >= 0.005)
    return (f"| {label} | " + " | ".join(fmt(groups.get(g), ".2f") for g in names)
            + f" | {fmt(server_cpu.get('ms_per_request'), '.2f')} | {fmt(server_cpu.get('cores_busy'), '.2f')} "
            f"| {children or '–'} |")


CPU_GROUPS_NOTE = (
    "Server CPU per answered request by thread group, from /proc per thread (bench/procstat.py): the event "
    "loop (the main thread), our device workers (`worker*` threads, with the intra-op threads they start), "
    "our host-work threads (`host*`, `HOST_MODE=thread`; `decode*` and `render*` in runs before it; the "
    "default host-work processes count as child processes, `host-work`), the request threads of "
    "FastAPI's thread pool (the naive server's "
    "`def` route), every other or exited thread, and child processes (by name in the last column).")


def _cpu_groups(result: dict[str, Any]) -> list[str]:
    cells = [(name, c, server) for name, c in _cells(result) for server in ("ours", "naive")]
    names = recorded_groups([c[server].get("server_cpu") or {} for _, c, server in cells])
    lines = ["", "## Server CPU by thread group (ms per request)", "", CPU_GROUPS_NOTE, "",
             "| scenario / conc / server | " + " | ".join(names) + " | total | cores busy | child processes by name |",
             "|---" * (len(names) + 4) + "|"]
    rows = []
    for name, c, server in cells:
        row = cpu_group_row(f"{name} / {c['concurrency']} / {server}", c[server].get("server_cpu") or {}, names)
        if row:
            rows.append(row)
    return lines + (rows or ["| (not recorded: this run predates the per-thread accounting) |"
                             + " |" * (len(names) + 3)])


def _roofline(result: dict[str, Any]) -> list[str]:
    lines = ["", "## Roofline (raw fwd+bwd, in-process, best batch size)", "",
             "| model / mode | rows/s | best batch | threads tried | sweep (batch: rows/s) |", "|---|---|---|---|---|"]
    for key, r in result["roofline"].items():
        if not r:
            lines.append(f"| {key} | failed | | | |")
            continue
        sweep = ", ".join(f"{x['batch']}: {'OOM' if x.get('oom') else format(x['rows_per_s'], ',.0f')}"
                          for x in r["sweep"])
        threads = ", ".join(f"{k}: {v:,.0f}" for k, v in r.get("rows_per_s_by_threads", {}).items())
        lines.append(f"| {key} | {r['rows_per_s']:,.0f} | {r['best_batch']} | {threads} | {sweep} |")
    return lines


def _answers(result: dict[str, Any]) -> list[str]:
    lines = ["", "## Same answers", "",
             "One identical request to both servers before the cells: prediction, target and output keys "
             "equal; overlays compared pixel by pixel (within float32 rounding: at most "
             f"{OVERLAY_MAX_STEP} colour steps in any pixel, {OVERLAY_MEAN_STEP} on average, bench/answers.py); "
             "tabular attributions compared numerically.", ""]
    for name, entry in result["scenarios"].items():
        match = entry["outputs_match"]
        lines.append(f"- {name}: {'same' if match.get('ok') else 'DIFFERENT'} {json.dumps(match)}")
        if entry.get("note"):
            lines.append(f"  - {entry['note']}")
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    lines = [*_header(result), *_targets(result), *_results(result), *_time(result), *_cpu_groups(result),
             *_roofline(result), *_answers(result)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    for name in sys.argv[1:] if argv is None else argv:
        path = Path(name)
        result = json.loads(path.read_text(encoding="utf-8"))
        path.with_suffix(".md").write_text(render_markdown(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
