"""bench/torchserve: TorchServe's model and handler compute what our service computes on the same
weights; TorchServe itself runs on loopback only and stops with all its processes; the summary,
targets and report of the comparison."""

from __future__ import annotations

import copy
import json
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.inference.catalog import load_catalog
from app.inference.loading import load_model
from bench.catalogs import subset_catalog
from bench.common import RESULTS
from bench.scenarios import image_pngs
from bench.servers import Server, start_ours
from bench.torchserve import venv
from bench.torchserve.archive import build_model
from bench.torchserve.compare import MODEL, agreement, answers, request_bodies
from bench.torchserve.model import NormalizedResNet18
from bench.torchserve.report import evaluate, render, summarize
from bench.torchserve.server import Variant, config_properties, start_torchserve

PROBE = Path(__file__).with_name("torchserve_probe.py")
PNGS = image_pngs((224, 224), 2, seed=99)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bench catalog's resnet18 (seeded weights) and TorchServe's model folder built from them."""
    path = tmp_path_factory.mktemp("torchserve")
    catalog = subset_catalog([MODEL], path)
    (entry,) = tomllib.loads(catalog.read_text(encoding="utf-8"))["models"]
    build_model(Path(entry["weights"]), path / "store", MODEL)
    return path


@pytest.fixture(scope="module")
def ours(folder: Path) -> Iterator[Server]:
    server = start_ours("cpu", folder / "catalog.toml", {}, folder)
    try:
        server.wait_ready(600)
        yield server
    finally:
        server.stop()


def test_the_venv_has_torchserve_and_our_torch() -> None:
    # make install sets it up; it runs the service venv's torch, not a copy of its own.
    probe = subprocess.run([str(venv.python()), "-c", "import torch, ts; print(torch.__file__)"],
                           capture_output=True, text=True, check=True)
    assert Path(probe.stdout.strip()).resolve() == Path(torch.__file__).resolve()
    assert venv.java_version() >= 11


def test_the_model_file_is_our_services_function(folder: Path) -> None:
    (spec,) = load_catalog(folder / "catalog.toml")
    served = load_model(spec, torch.device("cpu")).module
    theirs = NormalizedResNet18()
    theirs.load_state_dict(torch.load(folder / "store" / MODEL / f"{MODEL}.pt", weights_only=True))
    theirs.eval()
    x = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), served(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torchserves_handler_answers_as_our_service(folder: Path, ours: Server, tmp_path: Path) -> None:
    """TorchServe's backend path (its loader, Context and our handler, no Java) against our service."""
    paths = []
    for i, png in enumerate(PNGS):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(png)
    probe = subprocess.run([str(venv.python()), str(PROBE), str(folder / "store" / MODEL), *map(str, paths)],
                           capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0, probe.stderr[-3000:]
    bodies = request_bodies(PNGS)
    for i, theirs in enumerate(json.loads(probe.stdout)):
        result = agreement(answers(ours, "ours", bodies, image=i),
                           {"top5": [tuple(x) for x in theirs["top5"]],
                            "attributions": np.asarray(theirs["attributions"])})
        assert result["ok"], result
        assert result["attribution_shape"] == [224, 224] and result["attribution_scale"] > 0


@pytest.mark.slow
def test_torchserve_serves_on_loopback_and_stops_with_its_processes(folder: Path, ours: Server) -> None:
    server = start_torchserve(folder / "store", MODEL, Variant(1, 1), folder / "ts")
    try:
        tree = server.sample()
        # No token: TorchServe 0.12 would refuse the requests (401) with its default token authorisation.
        result = agreement(answers(ours, "ours", request_bodies(PNGS)),
                           answers(server, "torchserve", request_bodies(PNGS)))
    finally:
        server.stop()
    assert result["ok"], result
    names = {name for name, _ in tree.children.values()}
    assert {"java", "python"} <= names  # the frontend and the model's worker
    for pid in [server.proc.pid, *tree.children]:  # gone, or a zombie left to its reaper
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_config_properties_binds_loopback_with_the_given_ports(tmp_path: Path) -> None:
    ports = {"inference": 1001, "management": 1002, "metrics": 1003, "grpc_inference": 1004,
             "grpc_management": 1005, "workers": 1006}
    text = config_properties(ports=ports, store=tmp_path, workers=2)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["inference_address"] == "http://127.0.0.1:1001"
    assert props["management_address"] == "http://127.0.0.1:1002"
    assert props["metrics_address"] == "http://127.0.0.1:1003"
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert (props["grpc_inference_port"], props["grpc_management_port"], props["initial_worker_port"]) == (
        "1004", "1005", "1006")
    assert props["disable_token_authorization"] == "true"
    assert props["default_workers_per_model"] == "2"
    assert props["model_store"] == str(tmp_path)


@pytest.mark.parametrize(("text", "variant", "name"), [
    ("1", Variant(1), "torchserve-w1"), ("2", Variant(2), "torchserve-w2"), ("2x1", Variant(2, 1), "torchserve-w2t1")])
def test_variants(text: str, variant: Variant, name: str) -> None:
    assert Variant.parse(text) == variant and variant.name == name


def test_agreement_flags_other_classes_and_other_attributions() -> None:
    ours = {"top5": [(3, 0.5), (1, 0.2)], "attributions": np.array([[1.0, -2.0], [0.5, 0.0]])}
    assert agreement(ours, copy.deepcopy(ours))["ok"]
    swapped = {**ours, "top5": [(1, 0.5), (3, 0.2)]}
    assert not agreement(ours, swapped)["ok"]
    off = {**ours, "attributions": ours["attributions"] + np.array([[0.0, 0.12], [0.0, 0.0]])}
    result = agreement(ours, off)
    assert not result["ok"] and result["attribution_max_rel_diff"] == pytest.approx(0.12 / 1.88)
    rounded = {**ours, "attributions": ours["attributions"] + np.array([[0.0, 0.006], [0.0, 0.0]])}
    assert agreement(ours, rounded)["ok"]


def test_agreement_wants_the_same_map_not_only_small_differences() -> None:
    rng = np.random.default_rng(3)
    ours = {"top5": [(3, 0.5)], "attributions": rng.standard_normal((64, 64))}
    noisy = {**ours, "attributions": ours["attributions"] + 0.03 * rng.standard_normal((64, 64))}
    result = agreement(ours, noisy)  # every pixel within 5% of the largest, but noise all over the map
    assert result["attribution_max_rel_diff"] < 0.05 and result["attribution_correlation"] < 0.9999
    assert not result["ok"]
    one_pixel = {**ours, "attributions": ours["attributions"].copy()}
    one_pixel["attributions"][5, 5] += 0.03 * np.abs(ours["attributions"]).max()  # a ReLU flipped by rounding
    assert agreement(ours, one_pixel)["ok"]


# --------------------------------------------------------------------------- summary, targets, report


def run(server: str, rep: int, rps: dict[str, float], cores: float = 1.9) -> dict[str, Any]:
    cell = {"throughput_rps": 0.0, "latency_ms": {"p50": 100.0, "p99": 150.0}, "errors": {}, "ok": 10,
            "client_cpu_ms_per_request": 0.3, "loadavg": [2.0, 2.0, 2.0],
            "server_cpu": {"ms_per_request": 40.0, "cores_busy": cores, "wall_s": 10.0}}
    return {"server": server, "repetition": rep, "start_s": 5.0, "loadavg": [1.0, 1.0, 1.0],
            "cells": {k: {**copy.deepcopy(cell), "throughput_rps": v} for k, v in rps.items()}}


def synthetic() -> dict[str, Any]:
    keys = ["predict/8", "ig/8"]
    return {
        "created": "2030-01-01T00:00:00+00:00", "note": "", "model": MODEL, "total_seconds": 99.0,
        "machine": {"cpu_count": 2, "cpu_affinity": 2, "cpu_model": "x", "python": "3.11", "torch": "2.14.1",
                    "captum": "0.9.0", "device": "cpu", "memory_gib": 23.5},
        "loadavg_start": [1.0, 1.0, 1.0], "loadavg_end": [1.0, 1.0, 1.0],
        "settings": {"torchserve": "0.12.0", "java": 17, "repetitions": 2, "load_generator": "wrk (1 thread)",
                     "variants": [{"name": "torchserve-w1", "workers": 1, "threads": None},
                                  {"name": "torchserve-w2t1", "workers": 2, "threads": 1}],
                     "service_env": {}, "cells": [{"key": k, "duration_s": 10.0} for k in keys]},
        "runs": [run("ours", 1, {"predict/8": 45.0, "ig/8": 1.6}),
                 run("torchserve-w1", 1, {"predict/8": 30.0, "ig/8": 1.0}),
                 run("torchserve-w2t1", 1, {"predict/8": 20.0, "ig/8": 1.1}),
                 run("torchserve-w2t1", 2, {"predict/8": 25.0, "ig/8": 1.2}),
                 run("torchserve-w1", 2, {"predict/8": 29.0, "ig/8": 0.9}),
                 run("ours", 2, {"predict/8": 44.0, "ig/8": 1.7}, cores=1.7)],
        "same_answers": {"torchserve-w1": {"ok": True}},
    }


def test_summary_compares_with_the_best_variant_of_each_repetition() -> None:
    summary = summarize(synthetic())
    assert summary["predict/8"]["rps"] == {"ours": [45.0, 44.0], "torchserve-w1": [30.0, 29.0],
                                           "torchserve-w2t1": [20.0, 25.0]}
    assert summary["predict/8"]["best_torchserve"] == [30.0, 29.0]
    assert summary["predict/8"]["ratios"] == pytest.approx([1.5, 44.0 / 29.0])
    assert summary["ig/8"]["best_torchserve"] == [1.1, 1.2]
    assert summary["ig/8"]["ratios"] == pytest.approx([1.6 / 1.1, 1.7 / 1.2])


def test_targets_are_judged_on_the_worst_repetition() -> None:
    targets = {(t["cell"], t["metric"]): (t["value"], t["pass"]) for t in evaluate(synthetic())}
    assert targets == {("predict/8", "ratio"): (1.5, True), ("ig/8", "ratio"): (round(1.7 / 1.2, 3), False),
                       ("ig/8", "cores_busy"): (0.85, False)}


def test_report_tables() -> None:
    result = synthetic()
    result["targets"] = evaluate(result)
    lines = render(result).splitlines()
    assert "| cell | ours | torchserve-w1 | torchserve-w2t1 | ours / best TorchServe |" in lines
    assert "| predict/8 | 45.00, 44.00 | 30.00, 29.00 | 20.00, 25.00 | 1.50, 1.52 |" in lines
    assert "| ig/8 | ours | 2 | 1.70 | 100 / 150 | 40.0 | 1.70 | 0.30 | 0 | 10 | 2.0 |" in lines
    assert '- torchserve-w1: same {"ok": true}' in lines


@pytest.mark.parametrize("path", sorted(RESULTS.glob("torchserve*.json")), ids=lambda p: p.stem)
def test_render_reproduces_the_committed_report(path: Path) -> None:
    result = json.loads(path.read_text(encoding="utf-8"))
    assert evaluate(result) == result["targets"]
    assert render(result) == path.with_suffix(".md").read_text(encoding="utf-8")
