"""Instances in the API's JSON form: images as {"b64": ...}, tabular rows as objects or arrays."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode("ascii")}


def _number(value: Any, where: str) -> float | int:
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, np.integer | np.floating):
        return value.item()  # type: ignore[no-any-return]
    raise TypeError(f"{where}: expected a number, got {type(value).__name__}")


def _image_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "I;16", "1"):
        image = image.convert("RGB")
    image.save(buf, format="PNG")
    return buf.getvalue()


def encode_instance(instance: Any) -> Any:
    """One instance in the API's JSON form (see the module docstring for what is accepted)."""
    if isinstance(instance, Path):
        return _b64(instance.read_bytes())
    if isinstance(instance, str):
        if instance.startswith("data:"):
            return instance
        return _b64(Path(instance).read_bytes())
    if isinstance(instance, bytes | bytearray | memoryview):
        return _b64(bytes(instance))
    if isinstance(instance, Image.Image):
        return _b64(_image_bytes(instance))
    if isinstance(instance, Mapping):
        if "b64" in instance and len(instance) == 1:
            return {"b64": str(instance["b64"])}
        return {str(k): _number(v, f"feature {k!r}") for k, v in instance.items()}
    if isinstance(instance, np.ndarray):
        if instance.ndim == 1:
            return [_number(v, f"column {i}") for i, v in enumerate(instance.tolist())]
        if instance.ndim in (2, 3) and instance.dtype == np.uint8:
            return _b64(_image_bytes(Image.fromarray(instance)))
        raise TypeError(f"an array instance must be a 1-D row or an H x W (x C) uint8 image, "
                        f"got shape {instance.shape} {instance.dtype}")
    if isinstance(instance, Sequence):
        return [_number(v, f"column {i}") for i, v in enumerate(instance)]
    raise TypeError(f"cannot send a {type(instance).__name__} as an instance: use an image path, "
                    "PIL image, bytes, a dict of features or a list of numbers")


def _is_row(value: Any) -> bool:
    """A flat sequence of numbers (one tabular row)."""
    return (isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)
            and len(value) > 0
            and all(isinstance(v, int | float | np.integer | np.floating) for v in value))


def encode_instances(instances: Any) -> list[Any]:
    """A request's `instances`: a list of instances, or one instance on its own.

    One image (path, PIL image, bytes), one dict, one flat list of numbers or a 1-D array is
    sent as a single instance; a 2-D numeric array is one row per line.
    """
    if isinstance(instances, np.ndarray):
        if instances.ndim == 2 and instances.dtype != np.uint8:
            return [encode_instance(row) for row in instances]
        if instances.ndim == 4:
            return [encode_instance(img) for img in instances]
        return [encode_instance(instances)]
    if isinstance(instances, str | bytes | bytearray | memoryview | Path | Image.Image | Mapping):
        return [encode_instance(instances)]
    if _is_row(instances):
        return [encode_instance(instances)]
    if isinstance(instances, Iterable):
        encoded = [encode_instance(item) for item in instances]
        if not encoded:
            raise ValueError("no instances to send")
        return encoded
    return [encode_instance(instances)]


def plain(value: Any) -> Any:
    """numpy scalars and arrays (targets, params) as plain JSON values."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
