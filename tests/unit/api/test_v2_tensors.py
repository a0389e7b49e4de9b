"""Open Inference Protocol bodies and tensors (`app.api.v2_tensors`).

Binary bodies are built by tritonclient's and KServe's own request serializers, so the parser is
checked against the clients people use rather than against a copy of our own reading of the spec.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kserve import InferInput, InferRequest
from tritonclient.http._utils import _get_inference_request
from tritonclient.utils import serialize_byte_tensor

from app.api.v2_tensors import Body, byte_strings, fp32, parse_body, uint8
from app.errors import BadRequest, InvalidInput, ServiceError
from app.schemas_v2 import RequestInput


def triton_body(inputs: list[triton.InferInput]) -> tuple[bytes, str | None]:
    """The body and Inference-Header-Content-Length tritonclient sends for these inputs."""
    body, json_size = _get_inference_request(
        inputs=inputs, request_id="r1", outputs=None, sequence_id=0, sequence_start=False,
        sequence_end=False, priority=0, timeout=None, custom_parameters=None)
    return body, None if json_size is None else str(json_size)


def triton_input(name: str, array: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def json_body(**request: Any) -> Body:
    return parse_body(json.dumps(request).encode(), None)


def one(data: Any, shape: list[int], datatype: str = "FP32") -> Body:
    return json_body(inputs=[{"name": "x", "shape": shape, "datatype": datatype, "data": data}])


def test_binary_inputs_from_tritonclient_are_split_by_their_sizes() -> None:
    rows = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    pixels = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(1, 2, 5, 3)
    files = np.array([b"\x89PNG first", b"", b"third \x00 file"], dtype=np.object_)
    body, length = triton_body([triton_input("a", rows, "FP32", True), triton_input("b", pixels, "UINT8", True),
                                triton_input("c", files, "BYTES", True)])
    assert length is not None
    parsed = parse_body(body, length)
    a, b, c = parsed.request.inputs
    assert parsed.request.id == "r1" and parsed.request.parameters == {"binary_data_output": True}
    assert np.array_equal(fp32(a, parsed.binary[0]), rows.reshape(-1).astype(np.float64))
    assert np.array_equal(uint8(b, parsed.binary[1]), pixels.reshape(-1))
    assert byte_strings(c, parsed.binary[2]) == list(files)


def test_json_and_binary_inputs_mix_in_one_request() -> None:
    rows = np.array([[1.5, -2.25]], dtype=np.float32)
    body, length = triton_body([triton_input("a", rows, "FP32", False),
                                triton_input("b", np.array([b"xyz"], dtype=np.object_), "BYTES", True)])
    parsed = parse_body(body, length)
    assert parsed.binary[0] is None and parsed.binary[1] == struct.pack("<I", 3) + b"xyz"
    assert fp32(parsed.request.inputs[0], None).tolist() == [1.5, -2.25]


def test_kserve_binary_request_parses() -> None:
    tensor = InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"\xff\xd8\xffjpeg", b"\x89PNG"], dtype=np.object_), binary_data=True)
    body, length = InferRequest(model_name="shapes", infer_inputs=[tensor], request_id="k").to_rest()
    assert isinstance(body, bytes) and length is not None
    parsed = parse_body(body, str(length))
    assert parsed.request.model_name == "shapes"
    assert byte_strings(parsed.request.inputs[0], parsed.binary[0]) == [b"\xff\xd8\xffjpeg", b"\x89PNG"]


def test_nested_and_flat_json_data_are_the_same_tensor() -> None:
    flat = fp32(one([1, 2.5, 3, 4, 5, 6], [2, 3]).request.inputs[0], None)
    nested = fp32(one([[1, 2.5, 3], [4, 5, 6]], [2, 3]).request.inputs[0], None)
    assert flat.tolist() == nested.tolist() == [1.0, 2.5, 3.0, 4.0, 5.0, 6.0]
    deep = uint8(one([[[[0, 1, 2], [3, 4, 5]]]], [1, 1, 2, 3], "UINT8").request.inputs[0], None)
    assert deep.tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(("data", "shape", "message"), [
    ([[1, 2, 3], [4, 5]], [2, 3], "nested data does not follow the shape"),
    ([[1, 2], [3, 4], [5, 6]], [2, 3], "nested data does not follow the shape"),
    ([[[1, 2, 3]], [[4, 5, 6]]], [2, 3], "nested data does not follow the shape"),
    ([1, [2, 3], 4, 5, 6], [2, 3], "nested data does not follow the shape"),
    ([1, 2, 3, 4, 5], [2, 3], "shape [2, 3] holds 6 elements, the data has 5"),
    ([1, 2, 3, 4, 5, 6, 7], [2, 3], "holds 6 elements, the data has 7"),
    ([1, 2, True, 4, 5, 6], [2, 3], "element 2 is not a number"),
    ([1, 2, "3", 4, 5, 6], [2, 3], "element 2 is not a number"),
    ([1, 2, None, 4, 5, 6], [2, 3], "element 2 is not a number"),
    ([1, 2, 3, 4, 5, float("nan")], [2, 3], "element 5 is not finite"),
    ([float("-inf"), 2, 3, 4, 5, 6], [2, 3], "element 0 is not finite"),
    ([1, 2, 3, 4e38, 5, 6], [2, 3], "element 3 is out of range for float32"),
    ([1, 2, 3, 10**400, 5, 6], [2, 3], "out of range"),
])
def test_fp32_json_problems_are_422_naming_the_input(data: list[Any], shape: list[int], message: str) -> None:
    body = one(data, shape)
    with pytest.raises(InvalidInput) as caught:
        fp32(body.request.inputs[0], None)
    assert caught.value.detail.startswith("input 'x': ") and message in caught.value.detail
    assert caught.value.errors[0].loc[:2] == ("inputs", "x")


def test_fp32_binary_must_be_the_shape_and_finite() -> None:
    body = one([0.0] * 6, [2, 3])
    tensor = body.request.inputs[0]
    with pytest.raises(InvalidInput, match=r"binary_data_size is 20 bytes; shape \[2, 3\] of FP32 needs 24"):
        fp32(tensor, bytes(20))
    values = np.zeros(6, dtype="<f4")
    values[4] = np.inf
    with pytest.raises(InvalidInput, match="element 4 is not finite"):
        fp32(tensor, values.tobytes())
    values[4] = 0.1
    assert fp32(tensor, values.tobytes())[4] == np.float64(np.float32(0.1))


@pytest.mark.parametrize(("data", "message"), [
    ([0, 255, 256], "element 2 is outside 0..255"),
    ([-1, 0, 0], "element 0 is outside 0..255"),
    ([0, 1.0, 2], "element 1 is not an integer"),
    ([0, False, 2], "element 1 is not an integer"),
])
def test_uint8_json_elements_are_bytes(data: list[Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        uint8(one(data, [3], "UINT8").request.inputs[0], None)


def test_bytes_elements() -> None:
    tensor = one(["a", "b"], [2], "BYTES").request.inputs[0]
    assert byte_strings(tensor, None) == ["a", "b"]
    with pytest.raises(InvalidInput, match="element 1 is not a string"):
        byte_strings(one(["a", 2], [2], "BYTES").request.inputs[0], None)
    serialized = serialize_byte_tensor(np.array([b"one", b"two", b"three"], dtype=np.object_)).item()
    assert byte_strings(tensor_of([3]), serialized) == [b"one", b"two", b"three"]
    with pytest.raises(InvalidInput, match=r"shape \[2\] holds 2 elements, the binary data has more"):
        byte_strings(tensor_of([2]), serialized)
    with pytest.raises(InvalidInput, match=r"shape \[4\] holds 4 elements, the data has 3"):
        byte_strings(tensor_of([4]), serialized)
    with pytest.raises(BadRequest, match="truncated BYTES element length"):
        byte_strings(tensor_of([4]), serialized + b"\x01\x00")
    with pytest.raises(BadRequest, match="runs past its binary data"):
        byte_strings(tensor_of([3]), serialized[:-1])


def tensor_of(shape: list[int]) -> RequestInput:
    """A BYTES input whose data comes as binary (passed to `byte_strings` beside it)."""
    return RequestInput(name="x", shape=shape, datatype="BYTES")


@pytest.mark.parametrize(("body", "length", "message"), [
    (b'{"inputs": []', None, "malformed JSON"),
    (b"", None, "empty body"),
    (b"[1, 2]", None, "must be a JSON object"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', "x", "must be a number"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', "-5", "must be a number"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', "999", "exceeds the body"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}',
     None, "needs the Inference-Header-Content-Length header"),
])
def test_malformed_bodies_are_400(body: bytes, length: str | None, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_body(body, length)


def _binary(sizes: list[int], tail: bytes) -> tuple[bytes, str]:
    inputs = [{"name": f"x{i}", "shape": [size // 4], "datatype": "FP32", "parameters": {"binary_data_size": size}}
              for i, size in enumerate(sizes)]
    header = json.dumps({"inputs": inputs}).encode()
    return header + tail, str(len(header))


def test_binary_sizes_must_add_up_to_the_body() -> None:
    parsed = parse_body(*_binary([4, 8], bytes(12)))
    assert [len(b or b"") for b in parsed.binary] == [4, 8]
    with pytest.raises(BadRequest, match="x1': binary_data_size=8 runs past the end of the body"):
        parse_body(*_binary([4, 8], bytes(11)))
    with pytest.raises(BadRequest, match="1 bytes of binary data after the last binary input"):
        parse_body(*_binary([4, 8], bytes(13)))


@pytest.mark.parametrize(("tensor", "message"), [
    ({"data": [1], "parameters": {"binary_data_size": 4}}, "either 'data' or 'binary_data_size', not both"),
    ({}, "no data: give 'data' or the 'binary_data_size' parameter"),
    ({"parameters": {"binary_data_size": -4}}, "binary_data_size must be a non-negative integer"),
    ({"parameters": {"binary_data_size": True}}, "binary_data_size must be a non-negative integer"),
    ({"parameters": {"binary_data_size": "4"}}, "binary_data_size must be a non-negative integer"),
    ({"parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 4}}, "shared memory is not supported"),
])
def test_input_data_problems_are_422(tensor: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        json_body(inputs=[{"name": "x", "shape": [1], "datatype": "FP32", **tensor}])


@pytest.mark.parametrize("request_", [
    {},
    {"inputs": []},
    {"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]},
    {"inputs": [{"name": "x", "shape": [1.5], "datatype": "FP32", "data": [1]}]},
    {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "extra": 1}]},
    {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": {"p": [1]}}]},
    {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": 1}]},
    {"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]},
    {"id": 5, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]},
    {"unknown": True, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]},
])
def test_schema_violations_are_422_with_their_location(request_: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as caught:
        json_body(**request_)
    assert caught.value.errors and caught.value.detail


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
tensors = st.fixed_dictionaries({
    "name": st.sampled_from(["x", "input"]),
    "shape": st.lists(st.integers(0, 4), max_size=3),
    "datatype": st.sampled_from(["FP32", "UINT8", "BYTES"]),
}, optional={"data": json_values, "parameters": st.dictionaries(
    st.sampled_from(["binary_data_size", "other"]), st.integers(-2, 40) | json_values, max_size=2)})


@settings(max_examples=300, deadline=None)
@given(st.lists(tensors, max_size=3), st.binary(max_size=40), st.booleans())
@example([{"name": "x", "shape": [2, 2], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}],
         b"\x02\x00\x00\x00ab", True)
def test_any_body_raises_only_400_or_422(inputs: list[dict[str, Any]], tail: bytes, with_length: bool) -> None:
    header = json.dumps({"inputs": inputs}).encode()
    try:
        parsed = parse_body(header + tail, str(len(header)) if with_length else None)
        for tensor, binary in zip(parsed.request.inputs, parsed.binary, strict=True):
            {"FP32": fp32, "UINT8": uint8, "BYTES": byte_strings}[tensor.datatype](tensor, binary)
    except ServiceError as exc:
        assert exc.status in (400, 422), exc
