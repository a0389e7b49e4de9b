"""Recognising out-of-memory errors, from CUDA and from the CPU allocator alike."""

from __future__ import annotations

import torch


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
