"""Headless Chromium for the page's tests: one browser per module, a fresh context per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from tests.conftest import LiveServer
from tests.fixtures.browser import UI, chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture()
def ui(browser: Browser, live: LiveServer) -> Iterator[UI]:
    with UI(browser, live.url) as page:
        yield page
