"""A model as the Open Inference Protocol sees it: its input and output tensors, a request's
tensors turned into what the service predicts on, and the scores turned into output tensors.

Tabular models take `input` (FP32 `[N, features]`); image models take `image` (BYTES `[N]`:
encoded PNG/JPEG/WebP files; base64 strings in JSON) or `pixels` (UINT8 `[N, H, W, 3]`, RGB).
The one output, `scores`, is FP32 `[N, classes]` (probabilities in label order) or `[N, 1]`
(regression). Triton's classification extension (`"classification": k` on the requested
output) answers the top k classes as BYTES `"score:index:label"` instead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from app.api.v2_tensors import Body, byte_strings, fp32, uint8
from app.errors import ErrorItem, InvalidInput, PayloadTooLarge, quoted
from app.schemas_v2 import InferenceRequest, RequestInput

VERSION = "1"
PLATFORM = "pytorch"
EXTENSIONS = ["binary_tensor_data", "classification"]
OUTPUT = "scores"
@dataclass(frozen=True)
class Signature:
    """What a model takes and answers, in the protocol's terms."""

    name: str
    task: str
    inputs: dict[str, tuple[str, list[int]]]
    """The input tensors the model's kind takes, by name: (datatype, shape, -1 where variable)."""
    classes: int
    """Columns of `scores`: the classes, or 1 for regression."""
    labels: list[str] | None

    def input_shapes(self) -> dict[str, list[int]]:
        return {name: shape for name, (_, shape) in self.inputs.items()}

    def datatype(self, name: str) -> str:
        return self.inputs[name][0]

    def metadata(self) -> dict[str, Any]:
        inputs = [{"name": name, "datatype": datatype, "shape": shape}
                  for name, (datatype, shape) in self.inputs.items()]
        return {"name": self.name, "versions": [VERSION], "platform": PLATFORM, "inputs": inputs,
                "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, self.classes]}]}


@dataclass(frozen=True)
class ModelInputs:
    """A request's rows in the forms `Service.decode` takes."""

    rows: int
    instances: list[Any] = field(default_factory=list)
    """Tabular rows (lists of numbers), or images given in JSON (`{"b64": ...}` or data URIs)."""
    files: list[bytes] = field(default_factory=list)
    pixels: list[NDArray[np.uint8]] = field(default_factory=list)


def _listed(names: list[str]) -> str:
    """Client names for a message, each quoted and bounded, at most 8 of them."""
    shown = [quoted(name) for name in names[:8]] + ([f"... ({len(names)} in all)"] if len(names) > 8 else [])
    return "[" + ", ".join(shown) + "]"


def _expected(sig: Signature) -> str:
    shapes = sig.input_shapes()
    return " or ".join(f"'{name}' ({sig.datatype(name)} {shape})" for name, shape in shapes.items())


def _the_input(body: Body, sig: Signature) -> tuple[RequestInput, bytes | None]:
    inputs = body.request.inputs
    names = [tensor.name for tensor in inputs]
    if len(inputs) != 1 or names[0] not in sig.inputs:
        raise InvalidInput(f"model '{sig.name}' takes one input, {_expected(sig)}; got {_listed(names)}",
                           [ErrorItem(("inputs",), "unexpected inputs")])
    tensor = inputs[0]
    datatype = sig.datatype(tensor.name)
    if tensor.datatype != datatype:
        raise InvalidInput(f"input '{tensor.name}' is {datatype}, got {quoted(tensor.datatype)}",
                           [ErrorItem(("inputs", tensor.name, "datatype"), f"expected {datatype}")])
    return tensor, body.binary[0]


def _check_shape(tensor: RequestInput, declared: list[int], max_rows: int) -> int:
    shape = tensor.shape
    fits = len(shape) == len(declared) and all(d in (-1, s) for d, s in zip(declared, shape, strict=True))
    if declared == [-1] and shape[1:] == [1] and len(shape) == 2:
        fits = True  # [N, 1] for [N]: Triton's clients often send BYTES so
    if not fits:
        raise InvalidInput(f"input '{tensor.name}' has shape {declared}, got {shape}",
                           [ErrorItem(("inputs", tensor.name, "shape"), f"expected {declared}")])
    rows = shape[0]
    if rows < 1:
        raise InvalidInput(f"input '{tensor.name}' has no rows", [ErrorItem(("inputs", tensor.name, "shape"),
                                                                         "at least one row")])
    if rows > max_rows:
        raise PayloadTooLarge(f"{rows} rows exceed MAX_INSTANCES={max_rows}")
    return rows


def model_inputs(body: Body, sig: Signature, max_rows: int, max_pixels: int) -> ModelInputs:
    """The request's one input, checked against the model, as rows for the service."""
    tensor, binary = _the_input(body, sig)
    rows = _check_shape(tensor, sig.input_shapes()[tensor.name], max_rows)
    datatype = sig.datatype(tensor.name)
    if datatype == "FP32":  # rows of numbers
        values = fp32(tensor, binary).reshape(rows, *sig.input_shapes()[tensor.name][1:])
        return ModelInputs(rows, instances=values.tolist())
    if datatype == "UINT8":  # decoded RGB pixels
        height, width = tensor.shape[1], tensor.shape[2]
        if height < 1 or width < 1:
            raise InvalidInput(f"input 'pixels': images of {height}x{width} pixels",
                               [ErrorItem(("inputs", "pixels", "shape"), "empty image")])
        if height * width > max_pixels:
            raise PayloadTooLarge(f"input 'pixels': {width}x{height} = {width * height} pixels exceeds "
                                  f"MAX_IMAGE_PIXELS={max_pixels}")
        images = uint8(tensor, binary).reshape(rows, height, width, 3)
        return ModelInputs(rows, pixels=list(images))
    elements = byte_strings(tensor, binary)
    if binary is not None:
        return ModelInputs(rows, files=[e for e in elements if isinstance(e, bytes)])
    return ModelInputs(rows, instances=[e if e.startswith("data:") else {"b64": e}
                                        for e in elements if isinstance(e, str)])


@dataclass(frozen=True)
class Requested:
    binary: bool
    top: int
    """Triton's classification extension: the k best classes as strings; 0: the scores."""


def requested_output(request: InferenceRequest, sig: Signature) -> Requested:
    """How to answer `scores`: binary or JSON (request `binary_data_output`, overridden by the
    output's `binary_data`), scores or the top classes."""
    default = (request.parameters or {}).get("binary_data_output", False)
    if not isinstance(default, bool):
        raise InvalidInput("parameter binary_data_output must be a boolean",
                           [ErrorItem(("parameters", "binary_data_output"), "not a boolean")])
    asked = request.outputs or []
    names = [output.name for output in asked]
    if names and names != [OUTPUT]:
        raise InvalidInput(f"model '{sig.name}' has one output, '{OUTPUT}'; requested {_listed(names)}",
                           [ErrorItem(("outputs",), f"expected ['{OUTPUT}']")])
    params = (asked[0].parameters or {}) if asked else {}
    binary = params.get("binary_data", default)
    if not isinstance(binary, bool):
        raise InvalidInput("output parameter binary_data must be a boolean",
                           [ErrorItem(("outputs", OUTPUT, "binary_data"), "not a boolean")])
    top = params.get("classification", 0)
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise InvalidInput("output parameter classification must be a number of classes",
                           [ErrorItem(("outputs", OUTPUT, "classification"), "not a count")])
    if top and sig.task != "classification":
        raise InvalidInput(f"model '{sig.name}' is a regression model: it has no classes to rank",
                           [ErrorItem(("outputs", OUTPUT, "classification"), "not a classifier")])
    for key in params:
        if key.startswith("shared_memory"):
            raise InvalidInput("shared memory is not supported: outputs come in the body",
                               [ErrorItem(("outputs", OUTPUT, key), "not supported")])
    return Requested(binary, min(top, sig.classes))


def _top_classes(scores: NDArray[np.float32], top: int, labels: list[str] | None) -> NDArray[np.object_]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    text = [[f"{scores[i, j]:f}:{j}" + (f":{labels[j]}" if labels else "") for j in row]
            for i, row in enumerate(order)]
    return np.array(text, dtype=np.object_).reshape(scores.shape[0], top)


def _serialize_strings(values: NDArray[np.object_]) -> bytes:
    parts: list[bytes] = []
    for value in values.reshape(-1):
        encoded = str(value).encode()
        parts += [struct.pack("<I", len(encoded)), encoded]
    return b"".join(parts)


@dataclass(frozen=True)
class Encoded:
    body: bytes
    media_type: str
    headers: dict[str, str]


def encode_answer(sig: Signature, how: Requested, response_id: str, scores: NDArray[np.float32]) -> Encoded:
    """The inference response: JSON, or JSON followed by the output's binary data."""
    output: dict[str, Any] = {"name": OUTPUT}
    parameters: dict[str, Any] = {}
    if sig.labels is not None:
        parameters["labels"] = orjson.dumps(sig.labels).decode()
    blob: bytes | None = None
    if how.top:
        classes = _top_classes(scores, how.top, sig.labels)
        output.update(datatype="BYTES", shape=list(classes.shape))
        if how.binary:
            blob = _serialize_strings(classes)
        else:
            output["data"] = classes.reshape(-1).tolist()
    else:
        values = np.ascontiguousarray(scores, dtype="<f4")
        output.update(datatype="FP32", shape=list(values.shape))
        if how.binary:
            blob = values.tobytes()
        else:
            output["data"] = values.reshape(-1)
    if blob is not None:
        parameters["binary_data_size"] = len(blob)
    if parameters:
        output["parameters"] = parameters
    answer = {"model_name": sig.name, "model_version": VERSION, "id": response_id,
              "outputs": [output]}
    header = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if blob is None:
        return Encoded(header, "application/json", {})
    return Encoded(header + blob, "application/octet-stream",
                   {"Inference-Header-Content-Length": str(len(header))})
