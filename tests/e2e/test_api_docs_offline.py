"""/docs renders the OpenAPI description in a real browser with no other host reachable (the usual
GPU server behind a firewall): every asset comes from the service itself."""

from __future__ import annotations

from playwright.sync_api import Browser, Route

from tests.conftest import LiveServer
from tests.fixtures.browser import ARTIFACTS


def test_swagger_ui_renders_offline(browser: Browser, live: LiveServer) -> None:
    page_path, rendered = "/docs", ".opblock"  # Swagger UI: one block per operation
    refused: list[str] = []
    errors: list[str] = []

    def route(request_route: Route) -> None:
        if request_route.request.url.startswith(live.url + "/") or request_route.request.url.startswith("data:"):
            request_route.continue_()
        else:
            refused.append(request_route.request.url)
            request_route.abort()

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(live.url + page_path)
        page.wait_for_selector(rendered, timeout=60_000)
        assert page.locator(rendered).count() >= 10
        text = page.inner_text("body")
        assert "/v1/models/{model}/explain" in text or "explain" in text.lower()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"api{page_path.replace('/', '-')}.png"))
    finally:
        context.close()
    assert refused == [], f"the page reached for other hosts: {refused}"
    assert errors == [], errors
