"""How many work rows one forward+backward carries on a CPU.

On a CPU a large chunk is slower per row, not faster: glibc's malloc serves every block over its
mmap threshold (32 MiB at most) with fresh pages from the kernel and hands them back on free, so
each step page-faults (and zero-fills) all of its large activations again. ResNet-50 on 2 cores:
about 500 minor page faults per row in chunks of 2, 45,000 in chunks of 32, where integrated
gradients (32 steps) takes 5.9 s instead of 3.3 s in chunks of 8 (bench/results/history.md).
So a CPU model's chunks are capped where its largest activation would reach that size. GPUs are
not capped: they want the largest chunk that fits, which `MAX_BATCH_ROWS` and the out-of-memory
halving already give.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from app.inference.loading import LoadedModel, example_input

_PROBE_ROWS = 2


def activation_bytes_per_row(model: LoadedModel) -> int:
    """The largest tensor, in bytes per row, that a forward creates: the input, every submodule's
    output, the model's output. Submodules that refuse hooks (TorchScript) are not seen."""
    largest = 0

    def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal largest
        for tensor in output if isinstance(output, tuple | list) else (output,):
            if isinstance(tensor, torch.Tensor):
                largest = max(largest, tensor.nelement() * tensor.element_size())

    handles = []
    for module in model.module.modules():
        try:
            handles.append(module.register_forward_hook(record))
        except RuntimeError:
            continue
    x = example_input(model.spec, _PROBE_ROWS).to(model.device)
    try:
        with torch.no_grad():
            model.module(x)
    finally:
        for handle in handles:
            handle.remove()
    largest = max(largest, x.nelement() * x.element_size())
    return -(-largest // _PROBE_ROWS)


def cpu_chunk_rows(bytes_per_row: int, limit_bytes: int, max_rows: int) -> int:
    """The most rows whose largest activation stays below `limit_bytes` (at least 1, at most
    `max_rows`); `limit_bytes` 0 means no cap."""
    if limit_bytes <= 0 or bytes_per_row <= 0:
        return max_rows
    return max(1, min(max_rows, (limit_bytes - 1) // bytes_per_row))
