"""The TorchServe comparison's summary, targets and markdown (`bench/results/torchserve.md`),
computed from its results JSON alone."""

from __future__ import annotations

import json
from typing import Any

from bench.common import ratio
from bench.report import cpu_group_row, fmt, recorded_groups

__all__ = ["evaluate", "render", "summarize"]

TARGETS = [
    ("predict/8", "ratio", 1.5, "predict at concurrency 8: >= 1.5x TorchServe's throughput"),
    ("ig/8", "ratio", 1.5, "IG n_steps 15 at concurrency 8: >= 1.5x TorchServe's throughput (ceiling about 1.8x)"),
    ("ig/8", "cores_busy", 0.9, "IG at concurrency 8: every core busy (our server CPU / wall time, as a share "
                                "of the cores)"),
]


def _servers(result: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(run["server"] for run in result["runs"]))


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per cell: each server's req/s by repetition, the best TorchServe variant's per repetition,
    and ours over it per repetition."""
    reps = sorted({run["repetition"] for run in result["runs"]})
    out: dict[str, Any] = {}
    for key in (c["key"] for c in result["settings"]["cells"]):
        rps = {name: [next((r["cells"][key]["throughput_rps"] for r in result["runs"]
                            if r["server"] == name and r["repetition"] == rep), None) for rep in reps]
               for name in _servers(result)}
        best = [max((v[i] for n, v in rps.items() if n != "ours" and v[i] is not None), default=None)
                for i in range(len(reps))]
        out[key] = {"rps": rps, "best_torchserve": best,
                    "ratios": [ratio(o, b) for o, b in zip(rps.get("ours", []), best, strict=False)]}
    return out


def evaluate(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets, each judged on its worst repetition."""
    summary = summarize(result)
    cpus = result["machine"]["cpu_affinity"]
    out = []
    for key, metric, threshold, text in TARGETS:
        if key not in summary:
            continue
        if metric == "ratio":
            values = [r for r in summary[key]["ratios"] if r is not None]
        else:
            values = [run["cells"][key]["server_cpu"]["cores_busy"] / cpus for run in result["runs"]
                      if run["server"] == "ours" and run["cells"][key]["server_cpu"]["cores_busy"] is not None]
        if values:
            out.append({"target": text, "cell": key, "metric": metric, "value": round(min(values), 3),
                        "threshold": threshold, "pass": min(values) >= threshold})
    return out


def _per_rep(values: list[float | None], spec: str = ".2f") -> str:
    return ", ".join(fmt(v, spec) for v in values)


def _cell_rows(result: dict[str, Any], key: str) -> list[str]:
    rows = []
    for run in result["runs"]:
        c = run["cells"][key]
        lat, cpu = c["latency_ms"] or {}, c["server_cpu"]
        rows.append(f"| {key} | {run['server']} | {run['repetition']} | {fmt(c['throughput_rps'], '.2f')} | "
                    f"{fmt(lat.get('p50'), '.0f')} / {fmt(lat.get('p99'), '.0f')} | "
                    f"{fmt(cpu['ms_per_request'], '.1f')} | {fmt(cpu['cores_busy'], '.2f')} | "
                    f"{fmt(c['client_cpu_ms_per_request'], '.2f')} | {sum(c['errors'].values())} | {c['ok']} | "
                    f"{c['loadavg'][0]:.1f} |")
    return rows


def render(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    summary = summarize(result)
    names = _servers(result)
    groups = recorded_groups([run["cells"][key]["server_cpu"] for key in summary for run in result["runs"]])
    lines = [
        f"# Our service against TorchServe: {result['model']} ({m['device']})", "",
        f"Run {result['created']}, commit {m.get('git_commit', '?')}, {result['total_seconds']} s in all."
        + (f" Note: {result['note']}" if result.get("note") else ""), "",
        f"- Machine: {m['cpu_count']} CPUs ({m['cpu_model']}), {m.get('memory_gib', '?')} GiB, Python {m['python']}, "
        f"torch {m['torch']}, captum {m['captum']}; TorchServe {s['torchserve']} (Java {s['java']}), same torch",
        f"- Load average (1/5/15 min) at start {', '.join(f'{x:.2f}' for x in result['loadavg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in result['loadavg_end'])} (the host is shared)",
        f"- Servers one at a time, {s['repetitions']} repetitions (the second in reverse order); TorchServe variants: "
        + "; ".join(f"{v['name']} ({v['workers']} worker(s), "
                    + (f"{v['threads']} thread(s) each)" if v["threads"] else "torch's default threads)")
                    for v in s["variants"]),
        f"- Load generator: {s['load_generator']}; cells: "
        + ", ".join(f"{c['key']} {c['duration_s']:g} s" for c in s["cells"]) + "; the same 8 images (224 x 224 PNG) "
        "to both; our service: " + (f"overrides {s['service_env']}" if s["service_env"] else "default settings"),
        "", "## Targets", "", "| target | cell | value (worst repetition) | threshold | |", "|---|---|---|---|---|",
        *[f"| {t['target']} | {t['cell']} | {t['value']} | {t['threshold']} | {'PASS' if t['pass'] else 'FAIL'} |"
          for t in result["targets"]],
        "", "## Throughput (requests/s, by repetition)", "",
        "| cell | " + " | ".join(names) + " | ours / best TorchServe |", "|---" * (len(names) + 2) + "|",
        *[f"| {key} | " + " | ".join(_per_rep(row["rps"][n]) for n in names)
          + f" | {_per_rep(row['ratios'])} |" for key, row in summary.items()],
        "", "## Latency and CPU per cell", "",
        "Server CPU: every thread and child process of the server (TorchServe: its CLI, the Java frontend and "
        "the Python workers) over the cell, per answered request; cores busy: that CPU time over the wall time.",
        "", "| cell | server | rep | req/s | p50 / p99 ms | server CPU ms/req | cores busy | client CPU ms/req "
        "| errors | n | load |", "|---|---|---|---|---|---|---|---|---|---|---|",
        *[row for key in summary for row in _cell_rows(result, key)],
        "", "## Server CPU by thread group and process (ms per request)", "",
        f"| cell / server / rep | {' | '.join(groups)} | total | cores busy | child processes by name |",
        "|---" * (len(groups) + 4) + "|",
        *[row for key in summary for run in result["runs"]
          if (row := cpu_group_row(f"{key} / {run['server']} / {run['repetition']}", run["cells"][key]["server_cpu"],
                                   groups))],
        "", "## Same answers", "",
        "One image to both before the cells: TorchServe's top 5 classes and probabilities against ours, and its "
        "attributions (3 x 224 x 224, channels summed) against ours (224 x 224), relative to the largest, "
        "and their correlation (bench/torchserve/compare.py: `agreement`).", "",
        *[f"- {name}: {'same' if a['ok'] else 'DIFFERENT'} {json.dumps(a)}"
          for name, a in result["same_answers"].items()],
    ]
    return "\n".join(lines) + "\n"
