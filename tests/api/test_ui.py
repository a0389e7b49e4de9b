"""The built-in page's routes over real HTTP: the page, its assets, the demo examples, API keys,
and the wheel that ships them. The page in a browser: tests/e2e/test_ui.py."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from app.inference.catalog import load_catalog
from app.render.options import COLORMAPS, SIGNS
from tests.conftest import ROOT, LiveServer, make_settings
from tests.fixtures.catalogs import demo_subset

STATIC = ROOT / "app" / "ui" / "static"
KEY = "ui-test-key"
# A URL with a host: scheme-relative (//host) or absolute (http://, https://, ws:// ...).
_EXTERNAL = re.compile(r"""(?:\b[a-z][a-z0-9+.-]*:)?//[a-z0-9-]+(?:\.[a-z0-9-]+)+""", re.I)
_IMPORT = re.compile(r"""^import\s.*?from\s+["'](\./[\w./-]+)["'];$""", re.M)


class _Page(HTMLParser):
    """The URLs the page loads, its ids and the options of its selects."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.ids: set[str] = set()
        self.options: dict[str, list[str]] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        if tag == "select":
            self._select = values.get("id")
            self.options[str(self._select)] = []
        if tag == "option" and self._select and values.get("value"):
            self.options[self._select].append(str(values["value"]))
        for name in ("src", "href"):
            if values.get(name) and tag in ("script", "link", "img"):
                self.urls.append(str(values[name]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def test_the_page_is_html_with_a_policy_that_allows_only_the_service_itself(client: httpx.Client) -> None:
    r = client.get("/ui")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    policy = r.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert r.headers["cache-control"] == "no-cache"
    page = parse(r.text)
    assert {"api-key", "model", "file", "method", "params", "opacity", "overlay", "heatmap", "original",
            "download", "features", "bars", "summary", "problem"} <= page.ids
    # the render options are the service's own (no copy in the page to drift)
    assert page.options["colormap"] == list(COLORMAPS)
    assert page.options["sign"] == list(SIGNS)
    assert "{{" not in r.text


def test_browsers_asking_for_the_root_land_on_the_page(client: httpx.Client) -> None:
    r = client.get("/", headers={"Accept": "text/html"}, follow_redirects=True)
    assert r.status_code == 200 and str(r.url).endswith("/ui")
    assert "<title>explainserve</title>" in r.text


def _assets(client: httpx.Client) -> dict[str, httpx.Response]:
    """Every file the page loads, following the JavaScript modules' imports."""
    html = client.get("/ui").text
    pending = [url for url in parse(html).urls if not url.startswith("data:")]
    served: dict[str, httpx.Response] = {}
    while pending:
        url = pending.pop()
        if url in served:
            continue
        served[url] = response = client.get("/" + url)
        if url.endswith(".js"):
            base = url.rsplit("/", 1)[0]
            pending += [f"{base}/{name.removeprefix('./')}" for name in _IMPORT.findall(response.text)]
    return served


def test_every_asset_the_page_loads_is_served_from_the_package(client: httpx.Client) -> None:
    served = _assets(client)
    on_disk = {str(p.relative_to(ROOT / "app" / "ui")) for p in STATIC.rglob("*") if p.is_file()}
    assert {url.removeprefix("ui/") for url in served} == on_disk - {"static/index.html"}
    for url, response in served.items():
        assert response.status_code == 200, url
        kind = {"js": "text/javascript", "css": "text/css"}[url.rsplit(".", 1)[1]]
        assert response.headers["content-type"].startswith(kind), url
        assert response.content == (ROOT / "app" / "ui" / url.removeprefix("ui/")).read_bytes()


def test_the_page_and_its_assets_name_no_other_host(client: httpx.Client) -> None:
    texts = {"/ui": client.get("/ui").text} | {url: r.text for url, r in _assets(client).items()}
    for url, text in texts.items():
        assert _EXTERNAL.findall(text) == [], f"{url} names another host"
    # the pattern does find hosts (so its silence above means something)
    assert _EXTERNAL.findall('<script src="https://cdn.example.com/x.js"></script> url(//fonts.host.io/a)') == [
        "https://cdn.example.com", "//fonts.host.io"]


def test_an_unknown_asset_is_a_404_problem(client: httpx.Client) -> None:
    for path in ("/ui/static/nope.js", "/ui/static/../../app/config.py", "/ui/static/%2e%2e/__init__.py"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json"


def test_examples_list_and_serve_each_catalog_file(client: httpx.Client, live: LiveServer) -> None:
    specs = load_catalog(live.app.state.settings.models)
    assert all(spec.examples for spec in specs), "every demo model has examples"
    types = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp", ".json": "application/json"}
    for spec in specs:
        r = client.get(f"/ui/examples/{spec.name}")
        assert r.status_code == 200
        listing = r.json()
        assert listing["model"] == spec.name
        assert [e["name"] for e in listing["examples"]] == [p.name for p in spec.examples]
        for entry, path in zip(listing["examples"], spec.examples, strict=True):
            assert entry["media_type"] == types[path.suffix]
            assert entry["url"] == f"ui/examples/{spec.name}/{path.name}"
            got = client.get("/" + entry["url"])
            assert got.status_code == 200
            assert got.headers["content-type"].startswith(types[path.suffix])
            assert got.content == path.read_bytes()


def test_an_unknown_model_or_example_is_a_404_problem(client: httpx.Client) -> None:
    for path, detail in [("/ui/examples/nope", "unknown model 'nope'"),
                         ("/ui/examples/nope/circle.png", "unknown model 'nope'"),
                         ("/ui/examples/shapes/square.png", "model 'shapes' has no example 'square.png'"),
                         ("/ui/examples/shapes/labels.txt", "model 'shapes' has no example 'labels.txt'")]:
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == detail


@pytest.mark.parametrize("raw", [
    "/ui/examples/shapes/..%2Fweights.safetensors", "/ui/examples/shapes/..%2F..%2Fcatalog.toml",
    "/ui/examples/shapes/%2e%2e%2flabels.txt", "/ui/examples/shapes/examples%2Fcircle.png",
    "/ui/examples/shapes/%2Fetc%2Fpasswd", "/ui/examples/shapes/..", "/ui/examples/shapes/.",
    "/ui/examples/..%2Fshapes/circle.png", "/ui/examples/shapes/circle.png%00.txt",
])
def test_no_path_reaches_another_file(live: LiveServer, raw: str) -> None:
    # Sent as written (http.client): httpx would normalise '.' and '..' away.
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    try:
        connection.request("GET", raw)
        r = connection.getresponse()
        body = r.read()
    finally:
        connection.close()
    assert r.status == 404, raw
    assert r.getheader("content-type") == "application/problem+json"
    assert not body.startswith(b"\x89PNG") and b"[[models]]" not in body


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    catalog = demo_subset(tmp_path_factory.mktemp("keyed"), ["shapes"])
    with LiveServer(make_settings(models=catalog, api_keys=KEY)) as server:
        yield server


def test_with_api_keys_the_page_stays_public_and_the_examples_need_a_key(keyed: LiveServer) -> None:
    with httpx.Client(base_url=keyed.url, timeout=30) as web:
        assert web.get("/ui").status_code == 200
        assert web.get("/ui/static/js/main.js").status_code == 200
        for path in ("/ui/examples/shapes", "/ui/examples/shapes/circle.png", "/ui/examples/nope"):
            missing = web.get(path)
            assert missing.status_code == 401 and missing.headers["content-type"] == "application/problem+json"
            assert web.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert web.get("/ui/examples/shapes", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert web.get("/ui/examples/shapes/circle.png", headers={"X-API-Key": KEY}).status_code == 200
        assert web.get("/ui/examples/nope", headers={"X-API-Key": KEY}).status_code == 404


def test_the_wheel_ships_the_page_and_serves_it_without_the_source_tree(tmp_path: Path) -> None:
    """What the Dockerfile does: build a wheel from pyproject.toml, README.md and app/, install it."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "app", source / "app", ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("explainserve-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if n.startswith("app/ui/static/")}
        archive.extractall(tmp_path / "site")
    assert shipped == {f"app/ui/{p.relative_to(ROOT / 'app' / 'ui')}" for p in STATIC.rglob("*") if p.is_file()}
    # The installed copy answers /ui and its assets (run from elsewhere, so the source tree is not imported).
    probe = (
        "import asyncio, httpx, app\n"
        "from app.config import Settings\n"
        "from app.main import create_app\n"
        "print(app.__file__)\n"
        "web = create_app(Settings(models='nowhere.toml', device='cpu'))  # no lifespan: no model is needed\n"
        "async def main():\n"
        "    transport = httpx.ASGITransport(app=web)\n"
        "    async with httpx.AsyncClient(transport=transport, base_url='http://ui') as http:\n"
        "        for path in ('/ui', '/ui/static/js/main.js', '/ui/static/style.css'):\n"
        "            r = await http.get(path)\n"
        "            print(path, r.status_code, len(r.content))\n"
        "asyncio.run(main())\n"
        "web.state.service.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == str(tmp_path / "site" / "app" / "__init__.py")
    for line, path in zip(lines[1:], ("/ui", "/ui/static/js/main.js", "/ui/static/style.css"), strict=True):
        name, status, size = line.split()
        assert (name, status) == (path, "200") and int(size) > 500


def test_the_readme_shows_the_page() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "http://localhost:8000/ui" in text
    pictures = re.findall(r"!\[[^\]]+\]\((docs/img/ui-[\w-]+\.png)\)", text)
    assert pictures, "the README shows a screenshot of the page"
    for picture in pictures:
        assert (ROOT / picture).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), picture
