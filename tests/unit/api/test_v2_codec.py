"""A model's tensors in the Open Inference Protocol (`app.api.v2_codec`).

Answers are read back with tritonclient's and KServe's own response parsers.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kserve import InferResponse
from tritonclient.http import InferResult

from app.api.v2_codec import ModelInputs, Requested, Signature, encode_answer, model_inputs, requested_output
from app.api.v2_tensors import parse_body
from app.errors import InvalidInput, PayloadTooLarge, ServiceError
from app.schemas_v2 import InferenceRequest
from tests.unit.api.test_v2_tensors import tensors

ROWS_OF_3 = {"input": ("FP32", [-1, 3])}
PICTURES = {"image": ("BYTES", [-1]), "pixels": ("UINT8", [-1, -1, -1, 3])}
TABULAR = Signature("rows", "classification", ROWS_OF_3, 2, ["no", "yes"])
IMAGES = Signature("pics", "classification", PICTURES, 4, ["circle", "square", "triangle", "star"])
REGRESSION = Signature("value", "regression", {"input": ("FP32", [-1, 2])}, 1, None)


def inputs_of(sig: Signature, *tensors: dict[str, Any], max_rows: int = 8, max_pixels: int = 10_000) -> ModelInputs:
    body = parse_body(json.dumps({"inputs": list(tensors)}).encode(), None)
    return model_inputs(body, sig, max_rows, max_pixels)


def tensor(name: str, shape: list[int], datatype: str, data: list[Any]) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def test_metadata_declares_inputs_and_outputs() -> None:
    assert TABULAR.metadata() == {
        "name": "rows", "versions": ["1"], "platform": "pytorch",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 2]}]}
    assert IMAGES.metadata()["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                                           {"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    assert REGRESSION.metadata()["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 1]}]


def test_tabular_rows() -> None:
    rows = inputs_of(TABULAR, tensor("input", [2, 3], "FP32", [1, 2, 3, 4.5, 5, 6]))
    assert rows == ModelInputs(2, instances=[[1.0, 2.0, 3.0], [4.5, 5.0, 6.0]])


def test_images_in_json_binary_and_pixels() -> None:
    json_images = inputs_of(IMAGES, tensor("image", [2], "BYTES", ["aGVsbG8=", "data:image/png;base64,aGk="]))
    assert json_images == ModelInputs(2, instances=[{"b64": "aGVsbG8="}, "data:image/png;base64,aGk="])
    assert inputs_of(IMAGES, tensor("image", [1, 1], "BYTES", ["aGk="])).instances == [{"b64": "aGk="}]
    header = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 7}}]}).encode()
    body = parse_body(header + b"\x03\x00\x00\x00abc", str(len(header)))
    assert model_inputs(body, IMAGES, 8, 100) == ModelInputs(1, files=[b"abc"])
    pixels = inputs_of(IMAGES, tensor("pixels", [2, 1, 2, 3], "UINT8", list(range(12))))
    assert pixels.rows == 2 and [p.tolist() for p in pixels.pixels] == [
        [[[0, 1, 2], [3, 4, 5]]], [[[6, 7, 8], [9, 10, 11]]]]
    assert pixels.pixels[0].dtype == np.uint8


@pytest.mark.parametrize(("sig", "tensors", "message"), [
    (TABULAR, [tensor("image", [1], "BYTES", ["x"])],
     "model 'rows' takes one input, 'input' (FP32 [-1, 3]); got ['image']"),
    (TABULAR, [tensor("input", [1, 3], "FP32", [1, 2, 3])] * 2, "takes one input"),
    (IMAGES, [tensor("input", [1, 3], "FP32", [1, 2, 3])], "'image' (BYTES [-1]) or 'pixels' (UINT8 [-1, -1, -1, 3])"),
    (TABULAR, [tensor("input", [1, 3], "FP64", [1, 2, 3])], "input 'input' is FP32, got 'FP64'"),
    (IMAGES, [tensor("pixels", [1, 1, 1, 3], "INT32", [1, 2, 3])], "input 'pixels' is UINT8, got 'INT32'"),
    (TABULAR, [tensor("input", [1, 4], "FP32", [1, 2, 3, 4])], "input 'input' has shape [-1, 3], got [1, 4]"),
    (TABULAR, [tensor("input", [3], "FP32", [1, 2, 3])], "has shape [-1, 3], got [3]"),
    (TABULAR, [tensor("input", [0, 3], "FP32", [])], "input 'input' has no rows"),
    (IMAGES, [tensor("image", [1, 2], "BYTES", ["a", "b"])], "has shape [-1], got [1, 2]"),
    (IMAGES, [tensor("pixels", [1, 2, 2, 4], "UINT8", [0] * 16)], "has shape [-1, -1, -1, 3], got [1, 2, 2, 4]"),
    (IMAGES, [tensor("pixels", [1, 0, 2, 3], "UINT8", [])], "images of 0x2 pixels"),
    (TABULAR, [tensor("input", [1, 3], "FP32", [1, 2, float("nan")])], "input 'input': element 2 is not finite"),
])
def test_inputs_the_model_does_not_take_are_422(sig: Signature, tensors: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        inputs_of(sig, *tensors)
    assert message in caught.value.detail


def test_rows_and_pixels_over_the_limits_are_413_before_reading_the_data() -> None:
    with pytest.raises(PayloadTooLarge, match="9 rows exceed MAX_INSTANCES=8"):
        inputs_of(TABULAR, tensor("input", [9, 3], "FP32", []))
    with pytest.raises(PayloadTooLarge, match=r"input 'pixels': 200x100 = 20000 pixels exceeds MAX_IMAGE_PIXELS=10000"):
        inputs_of(IMAGES, tensor("pixels", [1, 100, 200, 3], "UINT8", []))


def request(outputs: list[dict[str, Any]] | None = None, **parameters: Any) -> InferenceRequest:
    return InferenceRequest.model_validate({
        "inputs": [tensor("input", [1, 3], "FP32", [1, 2, 3])], "outputs": outputs, "parameters": parameters})


def test_requested_output() -> None:
    assert requested_output(request(), TABULAR) == Requested(binary=False, top=0)
    assert requested_output(request(binary_data_output=True), TABULAR) == Requested(True, 0)
    assert requested_output(request([{"name": "scores"}], binary_data_output=True), TABULAR) == Requested(True, 0)
    overridden = request([{"name": "scores", "parameters": {"binary_data": False}}], binary_data_output=True)
    assert requested_output(overridden, TABULAR) == Requested(False, 0)
    top = request([{"name": "scores", "parameters": {"classification": 5, "binary_data": True}}])
    assert requested_output(top, TABULAR) == Requested(True, 2)  # at most the model's classes


@pytest.mark.parametrize(("sig", "outputs", "parameters", "message"), [
    (TABULAR, [{"name": "label"}], {}, "model 'rows' has one output, 'scores'; requested ['label']"),
    (TABULAR, [{"name": "scores"}, {"name": "scores"}], {}, "requested ['scores', 'scores']"),
    (TABULAR, None, {"binary_data_output": "yes"}, "binary_data_output must be a boolean"),
    (TABULAR, [{"name": "scores", "parameters": {"binary_data": 1}}], {}, "binary_data must be a boolean"),
    (TABULAR, [{"name": "scores", "parameters": {"classification": -1}}], {}, "classification must be a number"),
    (TABULAR, [{"name": "scores", "parameters": {"classification": "2"}}], {}, "classification must be a number"),
    (REGRESSION, [{"name": "scores", "parameters": {"classification": 1}}], {}, "no classes to rank"),
    (TABULAR, [{"name": "scores", "parameters": {"shared_memory_region": "r"}}], {}, "shared memory is not supported"),
])
def test_unanswerable_outputs_are_422(sig: Signature, outputs: list[dict[str, Any]] | None,
                                      parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        requested_output(request(outputs, **parameters), sig)


SCORES = np.array([[0.1, 0.9], [0.7, 0.3], [0.123456789, 0.876543211]], dtype=np.float32)


def read_back(encoded: Any) -> tuple[InferResult, InferResponse]:
    length = encoded.headers.get("Inference-Header-Content-Length")
    triton = InferResult.from_response_body(encoded.body, header_length=None if length is None else int(length))
    kserve = InferResponse.from_bytes(encoded.body, int(length) if length is not None else len(encoded.body))
    return triton, kserve


@pytest.mark.parametrize("binary", [False, True])
def test_scores_read_back_by_both_clients_exactly(binary: bool) -> None:
    encoded = encode_answer(TABULAR, Requested(binary, 0), "req-7", SCORES)
    assert encoded.media_type == ("application/octet-stream" if binary else "application/json")
    triton, kserve = read_back(encoded)
    assert np.array_equal(triton.as_numpy("scores"), SCORES)
    assert triton.as_numpy("scores").dtype == np.float32
    assert np.array_equal(kserve.outputs[0].as_numpy(), SCORES)
    response = triton.get_response()
    assert response["id"] == "req-7" and response["model_name"] == "rows" and response["model_version"] == "1"
    output = response["outputs"][0]
    assert output["datatype"] == "FP32" and output["shape"] == [3, 2]
    assert json.loads(output["parameters"]["labels"]) == ["no", "yes"]
    if binary:
        assert output["parameters"]["binary_data_size"] == SCORES.nbytes
        assert encoded.body.endswith(SCORES.astype("<f4").tobytes())


def test_regression_scores_have_no_labels() -> None:
    values = np.array([[151.25], [-3.5]], dtype=np.float32)
    encoded = encode_answer(REGRESSION, Requested(False, 0), "r", values)
    body = orjson.loads(encoded.body)
    assert body["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [2, 1], "data": [151.25, -3.5]}]


@pytest.mark.parametrize("binary", [False, True])
def test_top_classes_are_tritons_classification_strings(binary: bool) -> None:
    encoded = encode_answer(TABULAR, Requested(binary, 2), "r", SCORES)
    triton, kserve = read_back(encoded)
    expected = [["0.900000:1:yes", "0.100000:0:no"], ["0.700000:0:no", "0.300000:1:yes"],
                ["0.876543:1:yes", "0.123457:0:no"]]
    assert triton.as_numpy("scores").astype(str).tolist() == expected
    assert triton.get_output("scores")["datatype"] == "BYTES"
    unlabelled = Signature("rows", "classification", ROWS_OF_3, 2, None)
    top1 = orjson.loads(encode_answer(unlabelled, Requested(False, 1), "r", SCORES).body)["outputs"][0]
    assert top1["data"] == ["0.900000:1", "0.700000:0", "0.876543:1"] and "parameters" not in top1
    assert kserve.outputs[0].shape == [3, 2]


named_tensors = tensors | st.fixed_dictionaries({
    "name": st.sampled_from(["input", "image", "pixels"]),
    "shape": st.lists(st.integers(0, 5), min_size=1, max_size=4),
    "datatype": st.sampled_from(["FP32", "UINT8", "BYTES"]),
    "data": st.lists(st.integers(-1, 300) | st.floats() | st.text(max_size=8), max_size=30)})


@settings(max_examples=300, deadline=None)
@given(st.lists(named_tensors, min_size=1, max_size=2), st.sampled_from([TABULAR, IMAGES, REGRESSION]))
def test_any_tensors_give_model_inputs_or_400_413_422(inputs: list[dict[str, Any]], sig: Signature) -> None:
    try:
        rows = model_inputs(parse_body(json.dumps({"inputs": inputs}).encode(), None), sig, 4, 16)
    except ServiceError as exc:
        assert exc.status in (400, 413, 422), exc
        return
    assert 1 <= rows.rows <= 4
    assert rows.rows == len(rows.instances) + len(rows.files) + len(rows.pixels)
