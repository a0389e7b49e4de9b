"""The clients people already have, unmodified, against the live demo server: tritonclient's HTTP
client (sync and asyncio) and KServe's Python SDK (`InferenceRESTClient`, protocols v1 and v2).

Scores are compared with v1 predict's for the same inputs (v1 rounds to 6 significant digits)
and with the models run directly (`tests.api.test_predict.Reference`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from tritonclient.utils import InferenceServerException

from tests.api.test_predict import Reference, encode, random_rows, shape_image
from tests.api.test_v2 import FILES, v1_scores
from tests.conftest import LiveServer

SHAPES_LABELS = ["circle", "square", "triangle", "star"]


@pytest.fixture(scope="module")
def ref(live: LiveServer) -> Reference:
    return Reference(live.app.state.settings.models)


@pytest.fixture()
def tc(live: LiveServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(live.url.removeprefix("http://"), network_timeout=120)
    yield client
    client.close()


def f32_input(rows: list[list[float]], binary: bool) -> triton.InferInput:
    array = np.array(rows, dtype=np.float32)
    return triton.InferInput("input", list(array.shape), "FP32").set_data_from_numpy(array, binary_data=binary)


def test_tritonclient_health_and_metadata(tc: triton.InferenceServerClient, live: LiveServer) -> None:
    assert tc.is_server_live() and tc.is_server_ready()
    assert tc.is_model_ready("purchase") and tc.is_model_ready("shapes", "1")
    assert not tc.is_model_ready("nope") and not tc.is_model_ready("purchase", "2")
    assert tc.get_server_metadata() == {"name": "explainserve", "version": live.app.version,
                                        "extensions": ["binary_tensor_data", "classification"]}
    metadata = tc.get_model_metadata("breast-cancer")
    assert metadata == tc.get_model_metadata("breast-cancer", "1")
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
    assert metadata["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 2]}]
    with pytest.raises(InferenceServerException) as caught:
        tc.get_model_metadata("nope")
    assert caught.value.status() == "404" and caught.value.message() == "unknown model 'nope'"


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False, None])
def test_tritonclient_tabular(tc: triton.InferenceServerClient, ref: Reference, client: httpx.Client,
                              binary_in: bool, binary_out: bool | None) -> None:
    rows = random_rows(ref.specs["purchase"], 4, seed=21)
    outputs = None if binary_out is None else [triton.InferRequestedOutput("scores", binary_data=binary_out)]
    result = tc.infer("purchase", [f32_input(rows, binary_in)], outputs=outputs, request_id="t-1")
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float32 and scores.shape == (4, 2)
    np.testing.assert_allclose(scores, ref.tabular("purchase", rows), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, v1_scores(client, "purchase", 2, json={"instances": rows}), rtol=1e-5)
    response = result.get_response()
    assert response["id"] == "t-1" and response["model_name"] == "purchase"
    parameters = result.get_output("scores")["parameters"]
    assert json.loads(parameters["labels"]) == ["no_purchase", "purchase"]
    assert ("binary_data_size" in parameters) == (binary_out is not False)  # None: tritonclient asks binary


def test_tritonclient_regression_and_model_version(tc: triton.InferenceServerClient, ref: Reference) -> None:
    rows = random_rows(ref.specs["diabetes"], 3, seed=4)
    values = tc.infer("diabetes", [f32_input(rows, True)], model_version="1").as_numpy("scores")
    assert values.shape == (3, 1)
    np.testing.assert_allclose(values, ref.tabular("diabetes", rows), rtol=1e-5, atol=1e-4)
    with pytest.raises(InferenceServerException) as caught:
        tc.infer("diabetes", [f32_input(rows, True)], model_version="7")
    assert caught.value.status() == "404" and "no version '7'" in caught.value.message()


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_image_files(tc: triton.InferenceServerClient, ref: Reference, client: httpx.Client,
                                  binary: bool) -> None:
    # JSON cannot carry raw bytes: there the elements are base64 text
    elements = FILES if binary else [base64.b64encode(f) for f in FILES]
    images = triton.InferInput("image", [len(FILES)], "BYTES")
    images.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    scores = tc.infer("shapes", [images]).as_numpy("scores")
    np.testing.assert_allclose(scores, ref.images("shapes", FILES), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, v1_scores(client, "shapes", 4, files=[("file", f) for f in FILES]),
                               rtol=1e-5, atol=1e-9)


def test_tritonclient_pixels_and_top_classes(tc: triton.InferenceServerClient, ref: Reference) -> None:
    pixels = np.stack([np.asarray(shape_image(seed, 96, 64).convert("RGB")) for seed in (7, 8, 9)])
    tensor = triton.InferInput("pixels", list(pixels.shape), "UINT8").set_data_from_numpy(pixels)
    outputs = [triton.InferRequestedOutput("scores", binary_data=True, class_count=3)]
    result = tc.infer("shapes", [tensor], outputs=outputs)
    expected = ref.images("shapes", [encode(shape_image(seed, 96, 64), "PNG") for seed in (7, 8, 9)])
    ranked = result.as_numpy("scores").astype(str)
    assert ranked.shape == (3, 3)
    for row, scores in zip(ranked, expected, strict=True):
        order = np.argsort(-scores, kind="stable")[:3]
        parsed = [entry.split(":") for entry in row]
        assert [int(index) for _, index, _ in parsed] == [int(i) for i in order]
        assert [label for *_, label in parsed] == [SHAPES_LABELS[i] for i in order]
        assert [float(score) for score, *_ in parsed] == pytest.approx(scores[order], abs=1e-6)


def test_tritonclient_errors_carry_the_servers_message(tc: triton.InferenceServerClient) -> None:
    wrong = triton.InferInput("input", [1, 5], "FP32").set_data_from_numpy(np.zeros((1, 5), np.float32))
    with pytest.raises(InferenceServerException) as caught:
        tc.infer("purchase", [wrong])
    assert caught.value.status() == "422"
    assert caught.value.message() == "input 'input' has shape [-1, 6], got [1, 5]"
    gif = triton.InferInput("image", [1], "BYTES")
    gif.set_data_from_numpy(np.array([b"GIF89a not really"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as caught:
        tc.infer("shapes", [gif])
    assert caught.value.status() == "415"


@pytest.mark.anyio
async def test_tritonclient_asyncio(live: LiveServer, ref: Reference) -> None:
    rows = random_rows(ref.specs["breast-cancer"], 2, seed=9)
    async with triton_aio.InferenceServerClient(live.url.removeprefix("http://")) as aio:
        assert await aio.is_server_ready() and await aio.is_model_ready("breast-cancer")
        result = await aio.infer("breast-cancer", [f32_input(rows, True)])
    np.testing.assert_allclose(result.as_numpy("scores"), ref.tabular("breast-cancer", rows), rtol=1e-5, atol=1e-6)


@pytest.mark.anyio
async def test_kserve_v1_client(live: LiveServer, ref: Reference) -> None:
    rows = random_rows(ref.specs["purchase"], 2, seed=3)
    async with InferenceRESTClient(RESTConfig(protocol="v1", timeout=120)) as v1:
        assert await v1.is_server_live(live.url) is True
        assert await v1.is_model_ready(live.url, "purchase") is True
        predicted = await v1.infer(live.url, {"instances": rows}, model_name="purchase")
        expected = ref.tabular("purchase", rows)
        for prediction, probs in zip(predicted["predictions"], expected, strict=True):
            assert prediction["index"] == int(np.argmax(probs))
            assert prediction["score"] == pytest.approx(float(probs.max()), rel=1e-5)
        explained = await v1.explain(live.url, "purchase", {"instances": rows[:1], "method": "saliency"})
        assert explained["method"] == "saliency"
        assert [a["feature"] for a in explained["explanations"][0]["attributions"]] == ref.specs["purchase"].features
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await v1.infer(live.url, {"instances": rows}, model_name="nope")
        assert caught.value.response.status_code == 404


def kserve_input(name: str, array: np.ndarray, datatype: str, binary: bool) -> InferInput:
    tensor = InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


@pytest.mark.anyio
async def test_kserve_v2_client(live: LiveServer, ref: Reference, client: httpx.Client) -> None:
    rows = random_rows(ref.specs["breast-cancer"], 3, seed=17)
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=120)) as v2:
        assert await v2.is_server_live(live.url) is True
        assert await v2.is_server_ready(live.url) is True
        assert await v2.is_model_ready(live.url, "breast-cancer") is True
        assert await v2.is_model_ready(live.url, "nope") is False
        by_json = InferRequest("breast-cancer", [InferInput("input", [3, 30], "FP32", data=rows)], request_id="k-1")
        answer = await v2.infer(live.url, by_json, model_name="breast-cancer")
        assert answer.id == "k-1" and answer.model_name == "breast-cancer"
        scores = answer.outputs[0].as_numpy()
        np.testing.assert_allclose(scores, ref.tabular("breast-cancer", rows), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scores, v1_scores(client, "breast-cancer", 2, json={"instances": rows}),
                                   rtol=1e-5, atol=1e-9)
        assert json.loads(answer.outputs[0].parameters["labels"]) == ["malignant", "benign"]
        binary = InferRequest("breast-cancer", [kserve_input("input", np.array(rows, np.float32), "FP32", True)],
                              parameters={"binary_data_output": True})
        assert np.array_equal((await v2.infer(live.url, binary, model_name="breast-cancer")).outputs[0].as_numpy(),
                              scores)
        files = InferRequest("shapes", [kserve_input("image", np.array(FILES, dtype=np.object_), "BYTES", True)],
                             request_outputs=[RequestedOutput("scores", {"binary_data": True})])
        image_scores = (await v2.infer(live.url, files, model_name="shapes")).outputs[0].as_numpy()
        np.testing.assert_allclose(image_scores, ref.images("shapes", FILES), rtol=1e-5, atol=1e-6)
        pixels = np.asarray(shape_image(5, 50, 70).convert("RGB"), dtype=np.uint8)[None]
        by_pixels = InferRequest("shapes", [kserve_input("pixels", pixels, "UINT8", True)])
        assert (await v2.infer(live.url, by_pixels, model_name="shapes")).outputs[0].as_numpy().shape == (1, 4)
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await v2.infer(live.url, InferRequest("nope", [InferInput("input", [1, 1], "FP32", data=[0.0])]),
                           model_name="nope")
        assert caught.value.response.status_code == 404
        assert str(caught.value).startswith("unknown model 'nope', '404 Not Found'")

