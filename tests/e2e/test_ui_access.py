"""The built-in page's errors, keyboard use, labels and API keys, in headless Chromium against the
real service (the flows themselves: test_ui.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser

from tests.conftest import ROOT, LiveServer, make_settings
from tests.fixtures import browser as browser_fixtures
from tests.fixtures.browser import UI, chromium
from tests.fixtures.catalogs import demo_subset

CIRCLE = ROOT / "models" / "shapes" / "examples" / "circle.png"
PURCHASE_ROWS = json.loads((ROOT / "models" / "purchase" / "example.json").read_text())["instances"]
KEY = "browser-key"


def test_without_chromium_the_browser_tests_fail_and_say_how_to_fix_it(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    monkeypatch.setattr(browser_fixtures, "CHROMIUM", tmp_path / "chromium")
    with pytest.raises(pytest.fail.Exception, match=r"Debian's chromium at .*: run `make install`"), chromium():
        pass


# --------------------------------------------------------------------------- errors


def test_service_errors_are_shown_beside_their_field(ui: UI, client: httpx.Client, tmp_path: Path) -> None:
    page = ui.page
    ui.open("shapes")
    page.select_option("#method", "integrated_gradients")
    page.fill("#param-n_steps", "5000")
    ui.act(lambda: page.set_input_files("#file", str(CIRCLE)), state="error")
    problem = client.post("/v1/models/shapes/explain", files={"file": CIRCLE.read_bytes()},
                          data={"method": "integrated_gradients", "params": '{"n_steps": 5000}'}).json()
    assert problem["errors"][0]["loc"] == ["params", "n_steps"]
    assert page.inner_text("#param-n_steps-error") == problem["detail"]
    assert page.get_attribute("#param-n_steps", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "param-n_steps"
    assert page.inner_text("#problem") == f"422 Unprocessable Content\n{problem['detail']}"
    ui.shot("error")

    # the next good request clears the errors
    page.fill("#param-n_steps", "4")
    ui.act(lambda: page.click("#explain"))
    assert page.is_hidden("#param-n_steps-error") and page.is_hidden("#problem")

    # an image the service does not take: 415, beside the file input
    gif = tmp_path / "shape.gif"
    Image.new("RGB", (16, 16)).save(gif)
    ui.act(lambda: page.set_input_files("#file", str(gif)), state="error")
    refused = client.post("/v1/models/shapes/explain", files={"file": gif.read_bytes()})
    assert refused.status_code == 415
    assert page.inner_text("#file-error") == refused.json()["detail"]
    ui.shot("error-image")

    # a feature left empty: the service's "missing feature", beside that feature
    page.select_option("#model", "purchase")
    page.wait_for_selector("body[data-state=ready]")
    page.fill('[data-feature="age"]', "")
    ui.act(lambda: page.click("#explain"), state="error")
    missing = client.post("/v1/models/purchase/explain", json={
        "instances": [{k: v for k, v in PURCHASE_ROWS[0].items() if k != "age"}]}).json()
    assert missing["errors"] == [{"loc": ["instances", 0, "age"], "msg": "missing"}]
    assert page.inner_text("#feature-0-error") == missing["detail"]
    assert page.evaluate("document.activeElement.dataset.feature") == "age"


# --------------------------------------------------------------------------- keyboard and labels


def _tab_to(ui: UI, selector: str, limit: int = 40) -> list[str]:
    """Press Tab until the focused element matches `selector`; the ids (or classes) passed on the way."""
    seen = []
    for _ in range(limit):
        ui.page.keyboard.press("Tab")
        if ui.page.evaluate(f"document.activeElement.matches({json.dumps(selector)})"):
            return seen
        seen.append(ui.page.evaluate("document.activeElement.id || document.activeElement.className"))
    raise AssertionError(f"Tab never reached {selector}; passed {seen}")


def test_the_page_works_from_the_keyboard(ui: UI) -> None:
    page = ui.page
    ui.open("shapes")
    assert _tab_to(ui, "#file") == ["api-key", "api-key-clear", "model"]
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    ui.act(lambda: chooser.value.set_files(str(CIRCLE)))
    assert page.inner_text("#prediction").startswith("Predicted: circle")

    _tab_to(ui, '.example[data-name="triangle.jpg"]')
    ui.act(lambda: page.keyboard.press("Enter"))
    assert page.get_attribute("#download", "download") == "triangle.gradcam.overlay.png"

    _tab_to(ui, '#top-k button[aria-pressed="false"]')
    chosen = page.evaluate("+document.activeElement.dataset.index")
    ui.act(lambda: page.keyboard.press("Enter"))
    assert page.get_attribute(f'#top-k button[data-index="{chosen}"]', "aria-pressed") == "true"

    _tab_to(ui, "#opacity")
    page.keyboard.press("ArrowRight")
    assert page.eval_on_selector("#overlay", "e => e.style.opacity") == "0.55"
    page.wait_for_selector('#download[data-alpha="0.55"]')


@pytest.mark.parametrize("model", ["shapes", "purchase"])
def test_every_control_has_a_label(ui: UI, model: str) -> None:
    page = ui.page
    ui.open(model)
    ui.act(lambda: page.click('#image-examples .example' if model == "shapes" else "#explain"))
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button, a')]
        .filter(e => e.getClientRects().length)   // shown
        .filter(e => {
            if (e.matches('button, a')) return !(e.textContent.trim() || e.getAttribute('aria-label'));
            return !([...e.labels].some(l => l.textContent.trim()) || e.getAttribute('aria-label'));
        }).map(e => e.outerHTML)""")
    assert unlabelled == []
    assert page.evaluate("[...document.images].filter(i => !i.hasAttribute('alt')).length") == 0
    # the names assistive technology finds the controls by
    assert page.get_by_role("combobox", name="Model", exact=True).get_attribute("id") == "model"
    assert page.get_by_role("combobox", name="Method", exact=True).get_attribute("id") == "method"
    assert page.get_by_label("API key", exact=True).get_attribute("id") == "api-key"
    if model == "shapes":
        assert page.get_by_role("slider", name="Heatmap opacity").get_attribute("id") == "opacity"
        assert page.get_by_role("button", name="circle.png").count() == 1
        assert page.get_by_role("link", name="Download overlay (PNG)").count() == 1
    else:
        assert page.get_by_role("spinbutton", name="cart_adds").get_attribute("data-feature") == "cart_adds"
        assert page.get_by_role("table").count() == 1


# --------------------------------------------------------------------------- API keys


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    catalog = demo_subset(tmp_path_factory.mktemp("keyed-ui"), ["shapes"])
    with LiveServer(make_settings(models=catalog, api_keys=KEY)) as server:
        yield server


@pytest.fixture()
def keyed_ui(browser: Browser, keyed: LiveServer) -> Iterator[UI]:
    with UI(browser, keyed.url) as page:
        yield page


def test_the_api_key_lives_in_the_tab_and_every_call_carries_it(keyed_ui: UI) -> None:
    ui = keyed_ui
    page = ui.page
    ui.open(state="error")
    assert "API key is required" in page.inner_text("#api-key-error")
    assert page.get_attribute("#api-key", "aria-invalid") == "true"
    ui.shot("key-required")

    page.fill("#api-key", "wrong-key")
    ui.act(lambda: page.keyboard.press("Tab"), state="error")  # the key is taken when the field is left
    assert page.inner_text("#api-key-error") == "the API key is not valid"

    page.fill("#api-key", KEY)
    page.keyboard.press("Enter")  # or with Enter
    page.wait_for_selector("body[data-state=ready]")
    assert page.evaluate("sessionStorage.getItem('explainserve.apiKey')") == KEY
    assert page.evaluate("localStorage.length") == 0 and ui.context.cookies() == []
    ui.act(lambda: page.click('#image-examples .example[data-name="circle.png"]'))
    api_calls = [r for r in ui.requests if "/v1/" in r.url or "/ui/examples/" in r.url]
    keyed_calls = [r for r in api_calls if r.headers.get("authorization") == f"Bearer {KEY}"]
    assert len(keyed_calls) >= 6  # models, examples (list and 3 files), explain
    assert {r.url.split("/")[-1] for r in keyed_calls} >= {"models", "shapes", "circle.png", "explain"}

    page.reload()  # the tab keeps its key
    page.wait_for_selector("body[data-state=ready]")
    assert page.input_value("#api-key") == KEY
    other = ui.new_page()  # another tab does not have it
    ui.open(page=other, state="error")
    assert other.input_value("#api-key") == ""
    assert "API key is required" in other.inner_text("#api-key-error")

    page.click("#api-key-clear")
    page.wait_for_selector("body[data-state=error]")
    assert page.evaluate("sessionStorage.length") == 0
