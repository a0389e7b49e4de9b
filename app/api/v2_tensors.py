"""Open Inference Protocol tensors: the body (JSON, then binary tensor data), and each input's
elements as numpy arrays or byte strings, checked against its declared shape and datatype.

Pure parsing, no knowledge of models: `v2_codec` decides which inputs a model takes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from app.api.bodies import parse_json
from app.api.problems import validation_error
from app.errors import BadRequest, ErrorItem, InvalidInput, quoted
from app.schemas_v2 import InferenceRequest, RequestInput

HEADER_LENGTH = "inference-header-content-length"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_UNSUPPORTED_PARAMS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


@dataclass(frozen=True)
class Body:
    """A parsed inference request: the JSON object, and each input's binary data (None: in JSON)."""

    request: InferenceRequest
    binary: list[bytes | None]


def _invalid(name: str, message: str, *loc: str | int) -> InvalidInput:
    return InvalidInput(f"input {quoted(name)}: {message}", [ErrorItem(("inputs", name, *loc), message)])


def _header_length(raw: str | None, size: int) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise BadRequest("Inference-Header-Content-Length must be a number of bytes")
    length = int(text)
    if length > size:
        raise BadRequest(f"Inference-Header-Content-Length={length} exceeds the body's {size} bytes")
    return length


def parse_body(body: bytes, header_length: str | None, max_values: int | None = None) -> Body:
    """The JSON object (the first `Inference-Header-Content-Length` bytes, or all of the body),
    and the binary tensor data after it, split by each input's `binary_data_size`. The JSON may
    hold at most `max_values` values (413 before it is parsed)."""
    length = _header_length(header_length, len(body))
    head, tail = (body, b"") if length is None else (body[:length], body[length:])
    data = parse_json(head, max_values)
    if not isinstance(data, dict):
        raise BadRequest("the inference request must be a JSON object")
    try:
        request = InferenceRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None  # type: ignore[arg-type]
    binary: list[bytes | None] = []
    offset = 0
    for tensor in request.inputs:
        params = tensor.parameters or {}
        for key in _UNSUPPORTED_PARAMS:
            if key in params:
                raise _invalid(tensor.name, "shared memory is not supported: send the data in the body",
                               "parameters", key)
        size = params.get("binary_data_size")
        if size is None:
            if tensor.data is None:
                raise _invalid(tensor.name, "no data: give 'data' or the 'binary_data_size' parameter", "data")
            binary.append(None)
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _invalid(tensor.name, "binary_data_size must be a non-negative integer",
                           "parameters", "binary_data_size")
        if tensor.data is not None:
            raise _invalid(tensor.name, "give either 'data' or 'binary_data_size', not both", "data")
        if length is None:
            raise BadRequest("binary tensor data needs the Inference-Header-Content-Length header")
        if offset + size > len(tail):
            raise BadRequest(f"input {quoted(tensor.name)}: binary_data_size={size} runs past the end of the body")
        binary.append(tail[offset:offset + size])
        offset += size
    if offset != len(tail):
        raise BadRequest(f"{len(tail) - offset} bytes of binary data after the last binary input")
    return Body(request, binary)


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


def _flatten(tensor: RequestInput) -> list[Any]:
    """The elements of JSON tensor data, flat (row-major) or nested exactly as the shape."""
    data = tensor.data or []
    if not any(isinstance(v, list) for v in data):
        return data
    items: list[Any] = [data]
    for size in tensor.shape:
        level: list[Any] = []
        for item in items:
            if not isinstance(item, list) or len(item) != size:
                raise _invalid(tensor.name, f"nested data does not follow the shape {tensor.shape}", "data")
            level.extend(item)
        items = level
    if any(isinstance(v, list) for v in items):
        raise _invalid(tensor.name, f"nested data does not follow the shape {tensor.shape}", "data")
    return items


def _check_count(tensor: RequestInput, count: int) -> None:
    expected = element_count(tensor.shape)
    if count != expected:
        raise _invalid(tensor.name, f"shape {tensor.shape} holds {expected} elements, the data has {count}",
                       "data")


def _check_bytes(tensor: RequestInput, size: int, itemsize: int) -> None:
    expected = element_count(tensor.shape) * itemsize
    if size != expected:
        raise _invalid(tensor.name, f"binary_data_size is {size} bytes; shape {tensor.shape} of "
                       f"{tensor.datatype} needs {expected}", "parameters", "binary_data_size")


def _json_numbers(tensor: RequestInput, integers: bool) -> NDArray[Any]:
    flat = _flatten(tensor)
    _check_count(tensor, len(flat))
    allowed = {int} if integers else {int, float}
    wrong = set(map(type, flat)) - allowed
    if wrong:
        index = next(i for i, v in enumerate(flat) if type(v) not in allowed)
        what = "an integer" if integers else "a number"
        raise _invalid(tensor.name, f"element {index} is not {what}: {quoted(flat[index])}", "data", index)
    try:
        return np.array(flat, dtype=np.int64 if integers else np.float64)
    except OverflowError:
        raise _invalid(tensor.name, "an element is out of range", "data") from None


def fp32(tensor: RequestInput, binary: bytes | None) -> NDArray[np.float64]:
    """FP32 elements (flat), finite and within float32's range."""
    if binary is not None:
        _check_bytes(tensor, len(binary), 4)
        values = np.frombuffer(binary, dtype="<f4").astype(np.float64)
    else:
        values = _json_numbers(tensor, integers=False)
    bad = ~np.isfinite(values) | (np.abs(values) > _FLOAT32_MAX)
    if bad.any():
        index = int(np.argmax(bad))
        what = "not finite" if not math.isfinite(values[index]) else "out of range for float32"
        raise _invalid(tensor.name, f"element {index} is {what}", "data", index)
    return values


def uint8(tensor: RequestInput, binary: bytes | None) -> NDArray[np.uint8]:
    """UINT8 elements (flat), 0 to 255."""
    if binary is not None:
        _check_bytes(tensor, len(binary), 1)
        return np.frombuffer(binary, dtype=np.uint8)
    values = _json_numbers(tensor, integers=True)
    bad = (values < 0) | (values > 255)
    if bad.any():
        index = int(np.argmax(bad))
        raise _invalid(tensor.name, f"element {index} is outside 0..255", "data", index)
    return values.astype(np.uint8)


def byte_strings(tensor: RequestInput, binary: bytes | None) -> list[bytes] | list[str]:
    """BYTES elements: in binary data, each a 4-byte little-endian length and its bytes; in JSON,
    strings (JSON cannot carry arbitrary bytes)."""
    if binary is None:
        flat = _flatten(tensor)
        _check_count(tensor, len(flat))
        for index, value in enumerate(flat):
            if not isinstance(value, str):
                raise _invalid(tensor.name, f"element {index} is not a string", "data", index)
        return flat
    expected = element_count(tensor.shape)
    elements: list[bytes] = []
    offset = 0
    while offset < len(binary):
        if len(elements) == expected:
            raise _invalid(tensor.name, f"shape {tensor.shape} holds {expected} elements, the binary data "
                           "has more", "parameters", "binary_data_size")
        if offset + 4 > len(binary):
            raise BadRequest(f"input {quoted(tensor.name)}: truncated BYTES element length at byte {offset}")
        (size,) = struct.unpack_from("<I", binary, offset)
        offset += 4
        if offset + size > len(binary):
            raise BadRequest(f"input {quoted(tensor.name)}: BYTES element {len(elements)} of {size} bytes "
                             "runs past its binary data")
        elements.append(binary[offset:offset + size])
        offset += size
    _check_count(tensor, len(elements))
    return elements
