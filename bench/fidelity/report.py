"""bench/results/fidelity.md from the measured results."""

from __future__ import annotations

from typing import Any


def _images(table: dict[str, Any]) -> list[str]:
    lines = [
        f"## Image methods on `shapes` ({table['images']} generated images, seed {table['seed']}; "
        f"the model's accuracy on them: {table['accuracy']:.1%})",
        "",
        "Each method at the model's defaults, attributing the true class. **Pointing**: the share of images",
        "whose map's peak (|channels summed|; the first in raster order among equal values) lies in the",
        "shape's box. **Deletion / insertion AUC**: the true class's probability as the pixels are removed",
        "(lower is better) or inserted (higher is better), most attributed first (docs/api.md, Faithfulness).",
        "**Randomised**: the mean Spearman correlation between the maps of the trained model and of a copy",
        "with re-initialised weights (the last conv block and the classifier; every layer): a map that",
        "explains the model should change, so lower is better, and near 1 fails the sanity check of",
        "Adebayo et al. **Passes** per image (what the batcher counts) and seconds per image on this",
        "machine (batches of 25, see the load below). Two references: a random map, and the shape's box.",
        "",
        "| method | pointing | deletion AUC | insertion AUC | randomised: top | randomised: all | passes | s / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table["rows"]:
        if row.get("reference"):
            lines.append(f"| *{row['method']}* | {row['pointing']:.1%} | {row['deletion_auc']:.3f} | "
                         f"{row['insertion_auc']:.3f} | | | | |")
            continue
        lines.append(f"| `{row['method']}` | {row['pointing']:.1%} | {row['deletion_auc']:.3f} | "
                     f"{row['insertion_auc']:.3f} | {row['randomised_top']:.2f} | {row['randomised_all']:.2f} | "
                     f"{row['passes']} | {row['seconds_per_image']:.4f} |")
    return lines


def _convergence(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Integrated gradients to a tolerance",
        "",
        "Held-out rows (generated images for `shapes`), the predicted class: the share whose",
        "|convergence_delta| is within 1% (the service's bound: 0.01 x max(|F(x) - F(b)|, 1% of the larger",
        "|output|)) at 32 fixed steps, and with `\"n_steps\": \"auto\"` at its defaults (tolerance 0.01,",
        "max_steps 128): the share converged and the passes per instance (every level run, plus 2).",
        "",
        "| model | baseline | rows | within 1% at 32 steps | converged with auto | mean passes | median | most |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['baseline']} | {r['rows']} | {r['within_at_32']:.0%} | "
                     f"{r['converged_auto']:.0%} | {r['mean_passes']:.0f} | {r['median_passes']:.0f} | "
                     f"{r['most_passes']} |")
    return lines


def _sampling(rows: list[dict[str, Any]]) -> list[str]:
    samples = sorted({int(n) for r in rows for n in r["spearman"]})
    lines = [
        "## Kernel SHAP against Shapley values",
        "",
        "Median Spearman correlation (the lowest in brackets) of Kernel SHAP's attributions with Shapley",
        "values over held-out rows (the `mean` baseline, the predicted class), by samples; the default",
        "(50 per feature, at least 200) in bold.",
        "",
        "| model (features) | rows | reference | " + " | ".join(f"{n} samples" for n in samples) + " |",
        "|---|---|---|" + "---|" * len(samples),
    ]
    for r in rows:
        cells = []
        for n in samples:
            found = r["spearman"].get(str(n))
            text = f"{found['median']:.3f} ({found['lowest']:.2f})" if found else ""
            cells.append(f"**{text}**" if n == r["default"] and text else text)
        lines.append(f"| {r['model']} ({r['features']}) | {r['rows']} | {r['reference']} | " + " | ".join(cells) + " |")
    return lines


def render(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# Fidelity of the explanations",
        "",
        f"Written by `python -m bench.fidelity` ({results['finished']}, {results['wall_s'] / 60:.1f} min) on "
        f"{machine.get('cpu_model') or machine.get('device_name')}, {machine.get('cpu_affinity')} cores, "
        f"torch {machine.get('torch')}, Captum {machine.get('captum')}, commit {machine.get('git_commit', '?')}. "
        f"Load average at the start {results['load_start']}, at the end {results['load_end']} (the cores are "
        "shared with other work: the seconds are indicative, the passes are not).",
        "",
    ]
    lines += _images(results["images"]) + [""]
    lines += _convergence(results["convergence"]) + [""]
    lines += _sampling(results["sampling"]) + [""]
    lines += results.get("notes", [])
    return "\n".join(lines) + "\n"
