"""API keys and CORS over real HTTP (API.md "Errors": 401 without a key, 403 with a wrong one)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from models.shapes import draw_sample
from tests.conftest import LiveServer, image_bytes, make_settings
from tests.fixtures import faulty, probes

KEYS = ("k1-secret", "k2-other-secret")
ALLOWED = "https://app.example.com"
PROBLEM = "application/problem+json"
ROW = [1.0] * 30


def _png() -> str:
    sample = draw_sample(np.random.default_rng(3), 64, 64, 2)
    return base64.b64encode(image_bytes(sample.image)).decode()


PNG = _png()

# (method, path, json body or None): every route that needs a key
MODEL_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/breast-cancer", None),
    ("POST", "/v1/models/breast-cancer/predict", {"instances": [ROW]}),
    ("POST", "/v1/models/breast-cancer:predict", {"instances": [ROW]}),
    ("POST", "/predict", {"model": "breast-cancer", "instances": [ROW]}),
    ("POST", "/v1/models/breast-cancer/explain", {"instances": [ROW], "params": {"n_steps": 4}}),
    ("POST", "/v1/models/shapes:explain", {"instances": [{"b64": PNG}]}),
    ("POST", "/explain", {"model": "diabetes", "instances": [[1.0] * 10]}),
]
ROUTE_IDS = [f"{m} {p}" for m, p, _ in MODEL_ROUTES]


@pytest.fixture(scope="module")
def keyed() -> Iterator[LiveServer]:
    with LiveServer(make_settings(api_keys=",".join(KEYS), cors_origins=f"{ALLOWED}, https://other.example")) as s:
        yield s


@pytest.fixture()
def http(keyed: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keyed.url, timeout=120) as c:
        yield c


def call(http: httpx.Client, method: str, path: str, body: dict[str, Any] | None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return http.request(method, path, json=body, headers=headers or {})


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    data = response.json()
    assert data["status"] == status and data["type"] == "about:blank"
    assert response.headers.get("x-request-id")
    return data


@pytest.mark.parametrize(("method", "path", "body"), MODEL_ROUTES, ids=ROUTE_IDS)
def test_model_routes_need_a_key(http: httpx.Client, method: str, path: str, body: dict[str, Any] | None) -> None:
    missing = call(http, method, path, body)
    problem(missing, 401)
    assert missing.headers["www-authenticate"].lower().startswith("bearer")
    for wrong in ({"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}, {"X-API-Key": KEYS[0][:-1]},
                  {"X-API-Key": KEYS[0] + "x"}, {"Authorization": f"Bearer {KEYS[0].upper()}"}):
        problem(call(http, method, path, body, wrong), 403)


@pytest.mark.parametrize(("method", "path", "body"), MODEL_ROUTES, ids=ROUTE_IDS)
def test_model_routes_accept_either_key_in_either_header(http: httpx.Client, method: str, path: str,
                                                         body: dict[str, Any] | None) -> None:
    answers = []
    for headers in ({"Authorization": f"Bearer {KEYS[0]}"}, {"X-API-Key": KEYS[1]},
                    {"authorization": f"bearer {KEYS[1]}"}, {"X-API-Key": KEYS[0]}, basic(KEYS[1])):
        response = call(http, method, path, body, headers)
        assert response.status_code == 200, (headers, response.text)
        answers.append(response.json())
    strip = [{k: v for k, v in a.items() if k != "timings_ms"} for a in answers]
    assert all(a == strip[0] for a in strip)


def basic(key: str, user: str = "anyone") -> dict[str, str]:
    """What a browser sends after a Basic challenge: the key as the password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


def test_basic_credentials_carry_the_key_as_password(http: httpx.Client) -> None:
    ok = {"instances": [ROW]}
    assert http.post("/v1/models/breast-cancer/predict", json=ok, headers=basic(KEYS[0])).status_code == 200
    assert http.post("/v1/models/breast-cancer/predict", json=ok, headers=basic(KEYS[0], "")).status_code == 200
    problem(http.post("/v1/models/breast-cancer/predict", json=ok, headers=basic("wrong")), 403)


@pytest.mark.parametrize("headers", [
    {"Authorization": "Basic !!not-base64"},
    {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    {"Authorization": "Bearer"},
    {"Authorization": KEYS[0]},
    {"X-API-Key": ""},
], ids=["bad-basic", "basic-without-colon", "empty-bearer", "no-scheme", "empty-x-api-key"])
def test_keys_in_other_forms_count_as_missing(http: httpx.Client, headers: dict[str, str]) -> None:
    problem(http.post("/v1/models/breast-cancer/predict", json={"instances": [ROW]}, headers=headers), 401)


def test_auth_is_checked_before_anything_about_the_request(http: httpx.Client) -> None:
    # no key: 401 whatever is wrong with the request, and nothing is said about which models exist
    problem(http.post("/v1/models/no-such-model/predict", json={"instances": [ROW]}), 401)
    problem(http.get("/v1/models/no-such-model"), 401)
    problem(http.post("/v1/models/breast-cancer/predict", content=b"{not json",
                      headers={"content-type": "application/json"}), 401)
    problem(http.post("/v1/models/breast-cancer/predict", content=b"x", headers={"content-type": "text/plain"}), 401)
    problem(http.post("/v1/models/breast-cancer/predict", json={"instances": [ROW]},
                      headers={"X-Request-Timeout": "garbage"}), 401)
    # with a wrong key: 403, the same
    problem(http.post("/v1/models/no-such-model/predict", json={"instances": [ROW]},
                      headers={"X-API-Key": "wrong"}), 403)
    # with a key, the request's own problems show
    good = {"X-API-Key": KEYS[0]}
    problem(http.post("/v1/models/no-such-model/predict", json={"instances": [ROW]}, headers=good), 404)
    problem(http.post("/v1/models/breast-cancer/predict", content=b"{not json",
                      headers={**good, "content-type": "application/json"}), 400)


def test_the_401_never_echoes_the_presented_key(http: httpx.Client) -> None:
    response = http.get("/v1/models", headers={"X-API-Key": "leaky-guess"})
    assert "leaky-guess" not in response.text


def test_probes_stay_open_without_model_names(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/").json() == {"status": "alive"}
    anonymous = http.get("/readyz")
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ready"}
    for headers in ({"X-API-Key": "wrong"}, {}):
        assert "breast-cancer" not in http.get("/readyz", headers=headers).text
    named = http.get("/readyz", headers={"X-API-Key": KEYS[1]}).json()
    assert named["status"] == "ready" and named["models"]["breast-cancer"] == "ready"


@pytest.mark.parametrize("path", ["/metrics", "/openapi.json", "/docs"])
def test_metrics_and_the_api_description_need_a_key(http: httpx.Client, path: str) -> None:
    missing = problem(http.get(path), 401)
    # a browser opening the page is asked for the key (any user name, the key as password)
    assert http.get(path).headers["www-authenticate"].startswith("Basic ")
    assert "detail" in missing
    problem(http.get(path, headers={"X-API-Key": "wrong"}), 403)
    for headers in ({"Authorization": f"Bearer {KEYS[0]}"}, basic(KEYS[1])):
        ok = http.get(path, headers=headers)
        assert ok.status_code == 200, ok.text
    if path == "/openapi.json":
        schema = http.get(path, headers=basic(KEYS[0])).json()
        assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey", "basic"}
        assert schema["paths"]["/healthz"]["get"]["security"] == []


def test_metrics_can_be_public_for_a_scraper(tmp_path: Path) -> None:
    catalog = faulty.catalog(tmp_path, {"tiny": {}})
    with LiveServer(make_settings(models=catalog, api_keys=KEYS[0], metrics_public=True)) as s, \
            httpx.Client(base_url=s.url, timeout=60) as http:
        ok = http.get("/metrics")
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")
        assert "explainserve_requests_total" in ok.text
        problem(http.get("/openapi.json"), 401)
        problem(http.get("/v1/models"), 401)


def test_without_api_keys_everything_is_open(client: httpx.Client) -> None:
    assert client.get("/v1/models").status_code == 200
    assert client.post("/v1/models/breast-cancer/predict", json={"instances": [ROW]},
                       headers={"X-API-Key": "anything"}).status_code == 200


def _preflight(http: httpx.Client, origin: str, method: str = "POST") -> httpx.Response:
    return http.options("/v1/models/breast-cancer/predict", headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, x-request-timeout"})


def test_cors_preflight_from_an_allowed_origin(http: httpx.Client) -> None:
    response = _preflight(http, ALLOWED)
    assert response.status_code == 200  # no key needed for a preflight
    assert response.headers["access-control-allow-origin"] == ALLOWED
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "POST" in response.headers["access-control-allow-methods"]
    assert _preflight(http, "https://other.example").headers["access-control-allow-origin"] == "https://other.example"


@pytest.mark.parametrize("origin", ["https://evil.example", "http://app.example.com", "https://app.example.com.evil"])
def test_cors_preflight_from_another_origin_is_not_allowed(http: httpx.Client, origin: str) -> None:
    response = _preflight(http, origin)
    assert "access-control-allow-origin" not in response.headers
    problem(response, 400)


def test_cors_headers_on_answers_and_errors(http: httpx.Client) -> None:
    ok = http.post("/v1/models/breast-cancer/predict", json={"instances": [ROW]},
                   headers={"Origin": ALLOWED, "X-API-Key": KEYS[0]})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ALLOWED
    exposed = ok.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "retry-after" in exposed  # readable by browser apps on 429/503
    # a browser app can read why it was refused
    refused = http.post("/v1/models/breast-cancer/predict", json={"instances": [ROW]}, headers={"Origin": ALLOWED})
    problem(refused, 401)
    assert refused.headers["access-control-allow-origin"] == ALLOWED
    other = http.post("/v1/models/breast-cancer/predict", json={"instances": [ROW]},
                      headers={"Origin": "https://evil.example", "X-API-Key": KEYS[0]})
    assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_without_cors_origins(client: httpx.Client) -> None:
    response = client.options("/v1/models/breast-cancer/predict", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in response.headers
    answer = client.post("/v1/models/breast-cancer/predict", json={"instances": [ROW]}, headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in answer.headers


def test_refused_requests_are_counted_under_their_route(http: httpx.Client) -> None:
    """A 401 on explain is counted with route "explain" and the model, not as an unknown route."""
    def refused() -> float:
        text = http.get("/metrics", headers={"X-API-Key": KEYS[0]}).text
        return probes.total(text, "explainserve_requests_total", route="explain", model="breast-cancer",
                            status="401")

    before = refused()
    problem(call(http, "POST", "/v1/models/breast-cancer/explain", {"instances": [ROW]}), 401)
    assert refused() == before + 1


def test_without_keys_pages_of_other_origins_cannot_spend_compute(client: httpx.Client, live: LiveServer) -> None:
    """A simple cross-origin multipart POST needs no preflight, so CORS alone would let any web page
    its users open spend the service's compute: without keys, the page's Origin must be allowed."""
    files = {"file": ("x.png", base64.b64decode(PNG), "image/png")}
    for origin in ("https://evil.example", "null", live.url.replace("127.0.0.1", "localhost")):
        refused = client.post("/v1/models/shapes/predict", files=files, headers={"Origin": origin})
        assert "CORS_ORIGINS" in problem(refused, 403)["detail"], origin
    same = client.post("/v1/models/shapes/predict", files=files, headers={"Origin": live.url})
    assert same.status_code == 200  # the built-in page and /docs are on the service's own origin
    assert client.post("/v1/models/shapes/predict", files=files).status_code == 200  # not a browser
    assert client.get("/v1/models", headers={"Origin": "https://evil.example"}).status_code == 200  # reads are safe


def test_an_origin_listed_in_cors_origins_may_post(tmp_path: Path) -> None:
    catalog = faulty.catalog(tmp_path, {"tiny": {}})
    with LiveServer(make_settings(models=catalog, cors_origins=ALLOWED)) as s, \
            httpx.Client(base_url=s.url, timeout=60) as http:
        body = {"instances": [[1.0, 2.0, 3.0, 4.0]]}
        allowed = http.post("/v1/models/tiny/predict", json=body, headers={"Origin": ALLOWED})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ALLOWED
        problem(http.post("/v1/models/tiny/predict", json=body, headers={"Origin": "https://evil.example"}), 403)
