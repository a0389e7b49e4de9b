"""The built-in page end to end: headless Chromium (Playwright, Debian's chromium) against the real
service. What the page shows is compared with what the API answers for the same request; errors,
keyboard use, labels and API keys: test_ui_access.py.

Each state's screenshot is written to test-artifacts/ui/ (docs/img/ has the README's copies).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ROOT, LiveServer
from tests.fixtures.browser import UI, data_uri_pixels

EXAMPLES = ROOT / "models" / "shapes" / "examples"
CIRCLE = EXAMPLES / "circle.png"
PURCHASE_ROWS = json.loads((ROOT / "models" / "purchase" / "example.json").read_text())["instances"]
DIABETES_ROWS = json.loads((ROOT / "models" / "diabetes" / "example.json").read_text())["instances"]


def explain_image(client: httpx.Client, path: Path, **fields: Any) -> dict[str, Any]:
    """The API's own answer to the multipart request the page sends."""
    form = {"outputs": "overlay,heatmap", **{k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}}
    r = client.post("/v1/models/shapes/explain", files={"file": (path.name, path.read_bytes())}, data=form)
    assert r.status_code == 200, r.text
    return r.json()


def same_picture(shown: str | None, served: str) -> bool:
    """Two PNG data URIs with the same pixels, give or take one level (summation order may differ)."""
    a, b = data_uri_pixels(shown), data_uri_pixels(served)
    return a.shape == b.shape and int(np.abs(a - b).max()) <= 1


def displayed_bars(ui: UI) -> list[tuple[str, float, float, float]]:
    """(feature, value, contribution, bar width in %) per row of the page's table, top to bottom."""
    rows = ui.page.eval_on_selector_all("#bars tbody tr", """rows => rows.map(r => [
        r.dataset.feature, r.cells[1].textContent, r.cells[2].textContent,
        parseFloat(r.querySelector('.fill').style.width)])""")
    return [(f, float(v), float(c.replace("\u2212", "-")), w) for f, v, c, w in rows]


def check_bars(ui: UI, reference: dict[str, Any]) -> None:
    """The page's bars are the API's attributions, ranked by magnitude, widths in proportion."""
    expected = sorted(reference["attributions"], key=lambda a: -abs(a["attribution"]))
    shown = displayed_bars(ui)
    assert [s[0] for s in shown] == [a["feature"] for a in expected]
    largest = abs(expected[0]["attribution"])
    for (_, value, contribution, width), a in zip(shown, expected, strict=True):
        assert value == pytest.approx(a["value"], rel=1e-7)
        assert contribution == pytest.approx(a["attribution"], rel=1e-3)  # shown to 4 significant digits
        assert width == pytest.approx(50 * abs(a["attribution"]) / largest, abs=1e-3)
    signs = ui.page.eval_on_selector_all("#bars .fill", "fills => fills.map(f => f.classList.contains('up'))")
    assert signs == [a["attribution"] >= 0 for a in expected]
    assert ui.page.inner_text("#summary") == reference["summary"]


# --------------------------------------------------------------------------- image models


def test_upload_an_image_blend_the_overlay_and_explain_another_class(ui: UI, client: httpx.Client,
                                                                     live: LiveServer) -> None:
    page = ui.page
    page.goto(live.url + "/")  # a browser asking for / is sent to the page
    assert page.url == live.url + "/ui"
    page.wait_for_selector("body[data-state=ready]")
    page.select_option("#model", "shapes")
    page.wait_for_selector("body[data-state=ready]")
    assert page.eval_on_selector_all("#image-examples .example", "b => b.map(e => e.dataset.name)") == [
        "circle.png", "triangle.jpg", "star.webp"]

    ui.act(lambda: page.set_input_files("#file", str(CIRCLE)))
    reference = explain_image(client, CIRCLE, method="gradcam", render={"sign": "absolute", "alpha": 0.5},
                              top_k="4")["explanations"][0]
    sizes = page.evaluate("['original', 'heatmap', 'overlay', 'overlay-base'].map(id => "
                          "[document.getElementById(id).naturalWidth, document.getElementById(id).naturalHeight])")
    assert sizes == [[128, 128]] * 4  # each loaded (an image that failed to load has natural size 0)
    assert page.inner_text("#prediction") == f"Predicted: {reference['prediction']['label']} " \
        f"({100 * reference['prediction']['score']:.1f}%)"
    choices = page.eval_on_selector_all("#top-k button", "b => b.map(e => [+e.dataset.index, e.ariaPressed])")
    top_k = reference["prediction"]["top_k"]
    assert choices == [[c["index"], "true" if i == 0 else "false"] for i, c in enumerate(top_k)]
    assert page.eval_on_selector_all("#timings dt", "d => d.map(e => e.textContent)") == [
        "queue", "compute", "render", "total"]
    # the heatmap shown and the overlay offered for download are the service's (at the slider's 0.5)
    assert same_picture(page.get_attribute("#heatmap", "src"), reference["heatmap"])
    download = page.get_attribute("#download", "href")
    assert same_picture(download, reference["overlay"])
    assert page.get_attribute("#download", "download") == "circle.gradcam.overlay.png"
    ui.shot("image")

    # The slider blends in the browser: no request; the download is the blend shown.
    explains = len([r for r in ui.requests if r.url.endswith("/explain")])
    page.fill("#opacity", "0.8")
    assert page.eval_on_selector("#overlay", "e => e.style.opacity") == "0.8"
    assert page.inner_text("#opacity-value") == "0.80"
    page.wait_for_selector('#download[data-alpha="0.80"]')
    blended = data_uri_pixels(page.get_attribute("#download", "href"))
    served = data_uri_pixels(explain_image(client, CIRCLE, method="gradcam",
                                           render={"sign": "absolute", "alpha": 0.8})["explanations"][0]["overlay"])
    assert (blended[..., 3] == 255).all()
    difference = np.abs(blended[..., :3] - served)  # canvas and Pillow round differently: a level or two
    assert difference.mean() < 0.5 and difference.max() <= 3, (difference.mean(), difference.max())
    assert np.abs(blended[..., :3] - data_uri_pixels(download)).mean() > 1.0  # unlike the blend at 0.5
    assert len([r for r in ui.requests if r.url.endswith("/explain")]) == explains
    ui.shot("slider")

    # Explain another class: the star, which the service then attributes.
    ui.act(lambda: page.click('#top-k button[data-index="3"]'))
    assert page.get_attribute('#top-k button[data-index="3"]', "aria-pressed") == "true"
    assert page.inner_text("#target").startswith("Explaining star")
    star = explain_image(client, CIRCLE, method="gradcam", target="3",
                         render={"sign": "absolute", "alpha": 0.8})["explanations"][0]
    assert star["target"]["label"] == "star"
    assert same_picture(page.get_attribute("#heatmap", "src"), star["heatmap"])
    assert not np.array_equal(data_uri_pixels(star["heatmap"]), data_uri_pixels(reference["heatmap"]))
    ui.shot("another-class")


def test_drop_an_image_or_pick_an_example_with_another_method(ui: UI, client: httpx.Client) -> None:
    page = ui.page
    ui.open("shapes")
    star = EXAMPLES / "star.webp"
    ui.act(lambda: page.evaluate("""bytes => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], "star.webp", {type: "image/webp"}));
        document.getElementById("drop-zone").dispatchEvent(
            new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", list(star.read_bytes())))
    assert page.inner_text("#prediction").startswith("Predicted: star")

    page.select_option("#method", "integrated_gradients")
    assert page.input_value("#param-n_steps") == "32"
    assert page.inner_text("#param-n_steps-hint") == "auto, or a number (1 to 1024)"
    page.fill("#param-n_steps", "8")
    page.select_option("#colormap", "viridis")
    page.select_option("#sign", "all")
    ui.act(lambda: page.click('#image-examples .example[data-name="triangle.jpg"]'))
    reference = explain_image(client, EXAMPLES / "triangle.jpg", method="integrated_gradients",
                              params={"n_steps": 8}, render={"colormap": "viridis", "sign": "all", "alpha": 0.5})
    assert page.inner_text("#target").endswith(
        f"with integrated_gradients; convergence delta {reference['explanations'][0]['convergence_delta']:.4g}")
    shown = page.get_attribute("#heatmap", "src")
    assert data_uri_pixels(shown).shape == (120, 160, 4)  # the submitted image's own size and aspect
    assert same_picture(shown, reference["explanations"][0]["heatmap"])


# --------------------------------------------------------------------------- tabular models


def test_fill_the_tabular_form_and_see_the_ranked_bars(ui: UI, client: httpx.Client) -> None:
    page = ui.page
    ui.open("purchase")
    features = list(PURCHASE_ROWS[0])
    assert page.eval_on_selector_all("#features input", "i => i.map(e => e.dataset.feature)") == features
    assert [float(page.input_value(f'[data-feature="{f}"]')) for f in features] == list(PURCHASE_ROWS[0].values())

    page.fill('[data-feature="cart_adds"]', "2")
    ui.act(lambda: page.press('[data-feature="cart_adds"]', "Enter"))  # Enter submits the form
    row = PURCHASE_ROWS[0] | {"cart_adds": 2}
    reference = client.post("/v1/models/purchase/explain", json={
        "instances": [row], "outputs": ["summary"], "top_k": 2}).json()["explanations"][0]
    check_bars(ui, reference)
    assert page.inner_text("#prediction").startswith(f"Predicted: {reference['prediction']['label']}")
    ui.shot("tabular")

    # A pasted JSON row (an array in feature order) fills the form and is explained.
    page.click("#tabular-input summary")
    second = list(PURCHASE_ROWS[1].values())
    page.fill("#json-row", json.dumps(second))
    ui.act(lambda: page.click("#json-apply"))
    assert [float(page.input_value(f'[data-feature="{f}"]')) for f in features] == second
    reference = client.post("/v1/models/purchase/explain", json={
        "instances": [second], "outputs": ["summary"]}).json()["explanations"][0]
    check_bars(ui, reference)

    # Explain the other class: its contributions, from the service.
    other = 1 - reference["prediction"]["index"]
    ui.act(lambda: page.click(f'#top-k button[data-index="{other}"]'))
    flipped = client.post("/v1/models/purchase/explain", json={
        "instances": [second], "outputs": ["summary"], "target": other}).json()["explanations"][0]
    check_bars(ui, flipped)


def test_a_regression_model_shows_its_value_and_no_classes(ui: UI, client: httpx.Client) -> None:
    page = ui.page
    ui.open("diabetes")
    ui.act(lambda: page.select_option("#example-row", "1"))  # choosing an example row explains it
    reference = client.post("/v1/models/diabetes/explain", json={
        "instances": [DIABETES_ROWS[1]], "outputs": ["summary"]}).json()["explanations"][0]
    value = reference["prediction"]["value"]
    assert page.inner_text("#prediction") == f"Predicted value: {float(format(value, '.4g')):g}"
    assert page.is_hidden("#top-k-block")
    check_bars(ui, reference)
    ui.shot("regression")
