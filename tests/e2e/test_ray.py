"""Cluster mode on a real Ray cluster: two nodes on this machine (a head and a worker joined to it,
one CPU each), two replicas of the demo catalog behind Serve's proxy, deployed by
`explainserve serve --ray` exactly as a user would.

The answers equal the embedded service's; requests spread over both replicas; the contract holds
through the proxy (429 with Retry-After from the replicas' queues and from Serve's, 504 on a
deadline, health and readiness, per-replica metrics); a replica killed under load loses nothing
(its requests in flight answer 503, the project's Client sends them again) and is replaced;
autoscaling takes the deployment from 1 to 2 replicas under load and back; shutdown drains.
The limits are small (MAX_QUEUE 64 work rows, 4 requests per replica, 2 waiting in the proxy), and
breast-cancer's MLP has a gate (`tests.fixtures.faulty.GatedMLP`, opened by a file) that holds each
replica's worker while the test overflows the queues: overload is made by the test's own traffic,
never by the machine's speed.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.client import Client
from tests.conftest import ROOT, LiveServer
from tests.fixtures.catalogs import demo_entries, demo_names, demo_subset, gated
from tests.fixtures.faulty import entered_markers
from tests.fixtures.probes import wait_until
from tests.fixtures.ray_cluster import RayCluster, wait_for
from tests.fixtures.ray_service import Load, ServiceOnRay, catalog_env, comparable, same

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

LIMITS = {"MAX_QUEUE": "64", "RAY_MAX_ONGOING_REQUESTS": "4", "RAY_MAX_QUEUED_REQUESTS": "2",
          "RAY_TARGET_ONGOING_REQUESTS": "1", "RAY_PROXY_LOCATION": "HeadOnly", "SHUTDOWN_GRACE_S": "20"}
CIRCLE = base64.b64encode((ROOT / "models/shapes/examples/circle.png").read_bytes()).decode()
STAR = (ROOT / "models/shapes/examples/star.webp").read_bytes()
PURCHASE = json.loads((ROOT / "models/purchase/example.json").read_text())["instances"]
GATE_ABOVE = 1000.0
"""breast-cancer's MLP holds its replica's worker for a row whose standardised first feature is above this."""
_CANCER = next(m for m in demo_entries() if m["name"] == "breast-cancer")
CANCER_PREDICT = "/v1/models/breast-cancer/predict"
CANCER_ROWS = [[m * (0.8 + 0.01 * i) for m in _CANCER["tabular"]["mean"]] for i in range(40)]
HOLD_ROW = [_CANCER["tabular"]["mean"][0] + 2 * GATE_ABOVE * _CANCER["tabular"]["std"][0],
            *_CANCER["tabular"]["mean"][1:]]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    ray_cluster = RayCluster(nodes=2, cpus_per_node=1).start()
    try:
        yield ray_cluster
    finally:
        ray_cluster.stop()


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Created by the test to open the gate of breast-cancer's MLP on every replica."""
    return tmp_path_factory.mktemp("gate") / "open"


@pytest.fixture(scope="module")
def service(cluster: RayCluster, gate: Path) -> Iterator[ServiceOnRay]:
    catalog = demo_subset(gate.parent, demo_names(),
                          gated("breast-cancer", GATE_ABOVE, gate_file=str(gate), gate_timeout_s=300.0))
    on_ray = ServiceOnRay(cluster, replicas=2, env={**catalog_env(), "MODELS": str(catalog), **LIMITS})
    try:
        wait_for(on_ray.ready, "the service on Ray to answer /readyz", timeout=300)
        wait_for(lambda: on_ray.running(2), "two running replicas", timeout=300)
        yield on_ray
    except BaseException:
        print(on_ray.log_tail())
        raise
    finally:
        on_ray.stop()


def explain_circle(client: Client, i: int) -> Any:
    return client.explain("shapes", {"b64": CIRCLE}, method="integrated_gradients", params={"n_steps": 8 + i % 3},
                          outputs=[])


def test_two_nodes_one_replica_each(cluster: RayCluster, service: ServiceOnRay) -> None:
    nodes = cluster.op("nodes")
    assert len(nodes) == 2 and all(n["cpus"] == 1 for n in nodes)
    # each replica takes one CPU: two running replicas means one on each node
    assert service.running(2)


def _calls() -> list[tuple[str, str, dict[str, Any] | None, dict[str, Any]]]:
    """(method, path, JSON body, request options) of the v1 routes, tabular and image."""
    tabular = {"instances": PURCHASE, "method": "integrated_gradients", "params": {"n_steps": 16},
               "outputs": ["summary", "chart"], "top_k": 2}
    image = {"instances": [{"b64": CIRCLE}], "method": "gradcam", "outputs": ["overlay", "heatmap", "attributions"]}
    return [
        ("GET", "/v1/models", None, {}),
        ("GET", "/v1/models/shapes", None, {}),
        ("POST", "/v1/models/purchase/predict", {"instances": PURCHASE, "top_k": 2}, {}),
        ("POST", "/v1/models/diabetes:predict", {"instances": [[50, 1, 25.3, 90, 200, 110, 50, 4, 4.6, 90]]}, {}),
        ("POST", "/predict", {"model": "shapes", "instances": [{"b64": CIRCLE}], "top_k": 3}, {}),
        ("POST", "/v1/models/purchase/explain", tabular, {}),
        ("POST", "/v1/models/shapes:explain", image, {}),
        ("POST", "/explain", {"model": "shapes", "instances": [{"b64": CIRCLE}],
                              "method": "integrated_gradients", "params": {"n_steps": 8}}, {}),
        ("POST", "/v1/models/shapes/explain", None, {"files": {"file": ("star.webp", STAR, "image/webp")},
                                                    "data": {"method": "saliency"}}),
        ("POST", "/v1/models/purchase/predict", {"instances": [{"age": 31}]}, {}),  # 422
        ("POST", "/v1/models/nope/predict", {"instances": [[1.0]]}, {}),  # 404
    ]


def test_answers_equal_the_embedded_service(live: LiveServer, service: ServiceOnRay) -> None:
    with httpx.Client(base_url=live.url, timeout=120) as embedded, \
            httpx.Client(base_url=service.url, timeout=120) as on_ray:
        for method, path, body, options in _calls():
            want = embedded.request(method, path, json=body, **options)
            got = on_ray.request(method, path, json=body, **options)
            assert got.status_code == want.status_code, (path, got.text)
            assert got.headers["content-type"] == want.headers["content-type"], path
            assert got.headers["x-replica"] and got.headers["x-request-id"]
            same(comparable(got.json()), comparable(want.json()), f"{method} {path}")
        png = {"instances": [{"b64": CIRCLE}], "method": "gradcam"}
        want = embedded.post("/v1/models/shapes/explain", json=png, headers={"Accept": "image/png"})
        got = on_ray.post("/v1/models/shapes/explain", json=png, headers={"Accept": "image/png"})
        assert got.headers["content-type"] == want.headers["content-type"] == "image/png"
        same(comparable("data:image/png;base64," + base64.b64encode(got.content).decode()),
             comparable("data:image/png;base64," + base64.b64encode(want.content).decode()), "overlay PNG")


def test_requests_spread_over_both_replicas(service: ServiceOnRay) -> None:
    replicas = {name.rsplit("#", 1)[1] for name in service.replicas()["names"]}
    with Load(service.url, 6, explain_circle, lambda i, result: None) as load:
        load.wait_done(60)
    assert not load.failures, load.failures[:5]
    counted = load.recorder.replicas
    assert set(counted) <= replicas | {""}, counted  # "" only for the proxy's own 429s
    assert all(counted[r] > 0 for r in replicas), f"answers per replica: {counted}"


def _gate_markers(gate: Path) -> set[str]:
    """The replica processes whose breast-cancer worker reached the gate."""
    return {marker.name.rsplit("-", 1)[1] for marker in entered_markers(gate)}


async def _hold_both_replicas(client: httpx.AsyncClient, gate: Path) -> list[asyncio.Task[httpx.Response]]:
    """Requests with a gate row until both replicas' breast-cancer workers wait at the gate. Serve's
    router may send the second one to the replica already held (it prefers the proxy's node); that
    one waits in that replica's queue (1 work row) and the next is sent once it is clear no new
    worker reached the gate."""
    holders: list[asyncio.Task[httpx.Response]] = []
    while len(_gate_markers(gate)) < 2:
        # 2 replicas x 4 requests: past 6 holders the overload below could not reach a replica
        assert len(holders) < 6, f"{len(holders)} holders reached {len(_gate_markers(gate))} replica(s)"
        held = len(_gate_markers(gate))
        holders.append(asyncio.create_task(client.post(CANCER_PREDICT, json={"instances": [HOLD_ROW]})))
        for _ in range(500):  # up to 5 s for this holder to reach a worker not yet held
            if len(_gate_markers(gate)) > held or holders[-1].done():
                break
            await asyncio.sleep(0.01)
        assert not holders[-1].done(), holders[-1].result().text
    return holders


def _refused_by_a_replica(response: httpx.Response) -> bool:
    return response.status_code == 429 and "x-replica" in response.headers


async def _overload(url: str, gate: Path) -> tuple[list[httpx.Response], list[httpx.Response], list[httpx.Response]]:
    """Both workers held at the gate, then (1) requests of 40 work rows, one at a time, until a
    replica refuses one: each replica queues one (64 rows at most) and refuses the next; (2) 16
    one-row requests at once: the replicas take 4 requests each and the proxy holds 2 waiting, so
    the proxy refuses at least 8. The gate opens and whatever was queued is answered.
    Returns (the 40-row answers, the one-row answers, the holders' answers)."""
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=64)) as client:
        holders: list[asyncio.Task[httpx.Response]] = []
        big: list[asyncio.Task[httpx.Response]] = []
        small: list[asyncio.Task[httpx.Response]] = []
        try:
            holders = await _hold_both_replicas(client, gate)
            while not any(t.done() and _refused_by_a_replica(t.result()) for t in big):
                # a queued one stays unanswered: 3 s, then the next (never more than 2 queued)
                assert len(big) < 8, [t.result().status_code for t in big if t.done()]
                big.append(asyncio.create_task(client.post(CANCER_PREDICT, json={"instances": CANCER_ROWS})))
                await asyncio.wait([big[-1]], timeout=3)
            small = [asyncio.create_task(client.post(CANCER_PREDICT, json={"instances": CANCER_ROWS[:1]}))
                     for _ in range(16)]
            await wait_until(lambda: sum(t.done() for t in small) >= 8, "the proxy's refusals")
        finally:
            gate.touch()
        answers = [list(await asyncio.gather(*tasks)) for tasks in (big, small, holders)]
        return answers[0], answers[1], answers[2]


def _assert_refusal(response: httpx.Response) -> None:
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["status"] == 429


def test_overload_is_429_with_retry_after_from_replicas_and_from_the_proxy(
        live: LiveServer, service: ServiceOnRay, gate: Path) -> None:
    big, small, holders = asyncio.run(_overload(service.url, gate))
    statuses = Counter(r.status_code for r in big + small)
    assert set(statuses) <= {200, 429}, statuses
    assert all(r.status_code == 200 for r in holders), [r.text for r in holders]
    for response in big + small:
        if response.status_code == 429:
            _assert_refusal(response)
    by_replica = [r for r in big if _refused_by_a_replica(r)]
    by_proxy = [r for r in small if r.status_code == 429 and "x-replica" not in r.headers]
    print(f"{len(holders)} holders; 40-row: {Counter(r.status_code for r in big)}, {len(by_replica)} refused by a "
          f"replica; one-row: {Counter(r.status_code for r in small)}, {len(by_proxy)} refused by the proxy")
    assert by_replica and all("queue is full" in r.json()["detail"] for r in by_replica), statuses
    assert len(by_proxy) >= 8 and all("backpressure" in r.json()["detail"] for r in by_proxy), statuses
    # what was queued behind the gate answers as the embedded service does
    with httpx.Client(base_url=live.url, timeout=60) as embedded:
        for rows, answers in ((CANCER_ROWS, big), (CANCER_ROWS[:1], small)):
            want = embedded.post(CANCER_PREDICT, json={"instances": rows}).json()
            for response in answers:
                if response.status_code == 200:
                    same(comparable(response.json()), comparable(want), "queued behind the gate")
    # the project's Client waits as told and gets every answer
    with Load(service.url, 12, explain_circle, lambda i, result: None) as load:
        load.wait_done(36)
    assert not load.failures, load.failures[:5]


def test_deadline_health_readiness_and_metrics(service: ServiceOnRay, cluster: RayCluster) -> None:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        late = client.post("/v1/models/purchase/predict", json={"instances": PURCHASE},
                           headers={"X-Request-Timeout": "1e-9"})
        assert late.status_code == 504 and late.headers["content-type"] == "application/problem+json"
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json()["status"] == "ready"
        metrics = client.get("/metrics")
        assert metrics.headers["x-replica"] and "explainserve_requests_total" in metrics.text
    replicas = {name.rsplit("#", 1)[1] for name in service.replicas()["names"]}

    def exported() -> set[str]:  # Ray's Prometheus endpoint on each node: Serve's per-replica counters
        found = set()
        for port in cluster.metrics_ports:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            counters = [line for line in text.splitlines() if line.startswith("ray_serve_deployment_request_counter")]
            found |= {r for r in replicas if any(f'replica="{r}"' in line for line in counters)}
        return found if found == replicas else set()

    wait_for(exported, "per-replica request counters on the nodes' metrics endpoints", timeout=120)


def test_a_replica_killed_under_load_loses_nothing_and_is_replaced(live: LiveServer, service: ServiceOnRay) -> None:
    with Client(live.url) as embedded:
        want = {steps: embedded.explain("shapes", {"b64": CIRCLE}, method="integrated_gradients",
                                        params={"n_steps": steps}, outputs=[]) for steps in (8, 9, 10)}

    def check(i: int, result: Any) -> None:
        expected = want[8 + i % 3].explanations[0]
        got = result.explanations[0]
        assert got.prediction.index == expected.prediction.index
        assert got.prediction.score == pytest.approx(expected.prediction.score, rel=1e-4)
        assert got.target == expected.target

    before = service.running(2)
    assert before
    with Load(service.url, 6, explain_circle, check) as load:
        load.wait_done(20)
        service.cluster.op("kill", before["names"][0])
        answered = load.done
        load.wait_done(answered + 40)
    assert not load.failures, load.failures[:5]
    print(f"statuses met while a replica was killed (the Client retried 429 and 503): {load.recorder.statuses}")
    assert set(load.recorder.statuses) <= {200, 429, 503}, load.recorder.statuses
    after = wait_for(lambda: service.running(2), "the killed replica to be replaced", timeout=300)
    assert before["names"][0] not in after["names"] and before["names"][1] in after["names"]


def test_autoscaling_from_one_to_two_replicas_under_load_and_back(service: ServiceOnRay) -> None:
    service.deploy(ray_min_replicas=1, ray_max_replicas=2, ray_upscale_delay_s=0, ray_downscale_delay_s=2)
    with Load(service.url, 1, explain_circle, lambda i, result: None) as light:
        wait_for(lambda: service.running(1), "autoscaling down to one replica (light load)", timeout=300)
        with Load(service.url, 8, explain_circle, lambda i, result: None) as heavy:
            wait_for(lambda: service.running(2), "autoscaling up to two replicas under load", timeout=300)
            heavy.wait_done(heavy.done + 16)
        wait_for(lambda: service.running(1), "autoscaling back to one replica (light load)", timeout=300)
        light.wait_done(light.done + 3)
    for load in (light, heavy):
        assert not load.failures, load.failures[:5]
        assert set(load.recorder.statuses) <= {200, 429, 503}, load.recorder.statuses


def test_shutdown_drains_accepted_requests(service: ServiceOnRay) -> None:
    with Load(service.url, 4, explain_circle, lambda i, result: None, retries=0) as load:
        load.wait_done(8)
        assert service.stop() == 0, service.log_tail()
    # every request sent before the application was deleted got its answer; after it, the
    # proxy says the service is not deployed (503); with no retries here, a request that met a
    # full queue while the replicas drained stays a retriable 429: nothing else is allowed
    statuses = load.recorder.statuses
    assert set(statuses) <= {200, 429, 503}, statuses
    assert all(" 503 " in failure or " 429 " in failure for failure in load.failures), load.failures[:5]
    response = httpx.get(service.url + "/readyz", timeout=10)
    assert response.status_code == 503 and response.headers["content-type"] == "application/problem+json"
