"""Roofline probe: the model's raw forward+backward throughput at its best batch size.

In-process, no HTTP, no Captum, no rendering: the same module our service serves (built by
`app.inference.loading`, same device, precision and memory format, normalisation inside, the
service's heap policy), one forward and one backward per row, at a sweep of batch sizes. The
best rows/s is the ceiling for any server doing that attribution on this machine with that
module:

- `input` (integrated gradients): gradient of each row's target output with respect to the
  input pixels or features. IG with n_steps=k costs k such rows per instance.
- `layer` (GradCAM): gradient of the target output with respect to the GradCAM layer's
  activations (the backward pass stops there). One row per image.

    python -m bench.roofline --model resnet50 --mode input --device cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from app.inference.catalog import load_catalog
from app.inference.explained import TargetScalar
from app.inference.loading import LoadedModel, load_model, resolve_device, typical_input
from app.runtime import heap
from app.runtime.pool import is_out_of_memory

__all__ = ["default_sizes", "probe"]


def default_sizes(model: LoadedModel) -> list[int]:
    """Batch sizes to sweep: powers of two up to what is plausible for the kind and device."""
    if model.spec.kind == "tabular":
        top = 65536
    elif model.device.type == "cuda":
        top = 1024
    else:
        top = 64
    sizes = [1]
    while sizes[-1] < top:
        sizes.append(sizes[-1] * 2)
    return sizes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_fn(model: LoadedModel, mode: str, batch: int) -> Any:
    """A closure running one fwd+bwd over `batch` rows."""
    scalar = TargetScalar(model)
    x = typical_input(model.spec, batch).to(model.device)
    x = x + 0.01 * torch.rand_like(x)
    targets = torch.zeros(batch, dtype=torch.long, device=model.device)
    if mode == "input":
        def step() -> None:
            xi = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(scalar(xi, targets).sum(), xi)
        return step
    if model.facts.gradcam_layer is None:
        raise ValueError(f"model {model.spec.name} has no GradCAM layer")
    layer = model.module.get_submodule("net." + model.facts.gradcam_layer)
    captured: list[torch.Tensor] = []

    def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
        if not output.requires_grad:  # frozen weights, plain input: the activation is a leaf
            output.requires_grad_(True)
        captured.append(output)

    def step() -> None:
        captured.clear()
        handle = layer.register_forward_hook(hook)
        try:
            out = scalar(x, targets).sum()
        finally:
            handle.remove()
        (grad,) = torch.autograd.grad(out, captured[0])
    return step


def probe(model: LoadedModel, mode: str, sizes: Sequence[int] | None = None,
          seconds_per_size: float = 1.5, max_seconds: float = 60.0) -> dict[str, Any]:
    """Sweep batch sizes; stop after three sizes without a 5% gain, an OOM, or when the next size
    would run past `max_seconds`."""
    if mode not in ("input", "layer"):
        raise ValueError(f"unknown mode {mode!r}: input or layer")
    results: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    stale = 0
    started = time.perf_counter()
    last_step = 0.0
    with torch.enable_grad():
        for batch in sizes or default_sizes(model):
            spent = time.perf_counter() - started
            # The next size's warm-up and one step take about twice this size's step: skip if that
            # would run past the budget.
            if spent > max_seconds or (results and spent + 4 * last_step > max_seconds):
                break
            try:
                step = _step_fn(model, mode, batch)
                t0 = time.perf_counter()
                step()  # warm-up: allocator, oneDNN/cuDNN plans
                _sync(model.device)
                warm = time.perf_counter() - t0
                iters = 0
                t0 = time.perf_counter()
                while True:
                    step()
                    iters += 1
                    _sync(model.device)
                    elapsed = time.perf_counter() - t0
                    if elapsed >= seconds_per_size or (iters >= 1 and elapsed + warm > 2 * seconds_per_size):
                        break
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                results.append({"batch": batch, "oom": True})
                if model.device.type == "cuda":
                    torch.cuda.empty_cache()
                break
            last_step = elapsed / iters
            row = {"batch": batch, "iters": iters, "seconds": elapsed, "rows_per_s": batch * iters / elapsed}
            results.append(row)
            if best is None or row["rows_per_s"] > best["rows_per_s"] * 1.05:
                stale = 0
            else:
                stale += 1
            if best is None or row["rows_per_s"] > best["rows_per_s"]:
                best = row
            if stale >= 3:
                break
    return {
        "model": model.spec.name, "mode": mode, "device": str(model.device),
        "precision": model.spec.precision, "best_batch": best["batch"] if best else None,
        "rows_per_s": best["rows_per_s"] if best else 0.0, "sweep": results,
        "probe_seconds": time.perf_counter() - started,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="raw fwd+bwd rows/s of a catalog model (the ceiling)")
    parser.add_argument("--catalog", type=Path, default=Path("bench/catalog.toml"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--mode", choices=["input", "layer"], required=True,
                        help="input: IG-style gradients to the input; layer: GradCAM-style to its layer")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", default="", help="comma-separated batch sizes (default: a sweep)")
    parser.add_argument("--seconds-per-size", type=float, default=1.5)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    heap.retain_freed()  # the service's heap policy (MALLOC_RETAIN's default)
    specs = {s.name: s for s in load_catalog(args.catalog)}
    if args.model not in specs:
        parser.error(f"no model {args.model!r} in {args.catalog}")
    model = load_model(specs[args.model], resolve_device(args.device))
    sizes = [int(s) for s in args.sizes.split(",") if s] or None
    result = probe(model, args.mode, sizes, args.seconds_per_size, args.max_seconds)
    result["threads"] = torch.get_num_threads()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
