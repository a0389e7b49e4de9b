"""The Python client and the `explainserve` CLI against a real server subprocess.

The server itself is started with the CLI (`python -m app.cli serve ...`) over the demo
catalog on CPU, once for this module; every CLI call is a subprocess too.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from app.client import APIError, Client, FeatureAttribution
from models.shapes import draw_sample
from tests.conftest import CATALOG, ROOT, free_port

PURCHASE_ROWS = json.loads((ROOT / "models" / "purchase" / "example.json").read_text())["instances"]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLAINSERVE_")}
    env["API_KEYS"] = ""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--models", str(CATALOG), "--device", "cpu", "--log-level", "WARNING"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not become ready:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def api(server_url: str) -> Iterator[Client]:
    with Client(server_url, timeout=120) as client:
        yield client


def cli(server_url: str | None, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    """`python -m app.cli --url URL ARGS...` (no --url when `server_url` is None)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLAINSERVE_")}
    env.update(env_vars)
    url = ["--url", server_url] if server_url else []
    return subprocess.run([sys.executable, "-m", "app.cli", *url, *args],
                          capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)


def shape_image(seed: int, width: int = 160, height: int = 120, label: int | None = None) -> Image.Image:
    return draw_sample(np.random.default_rng(seed), width, height, label).image


def write_png(path: Path, img: Image.Image) -> Path:
    img.save(path, format="PNG")
    return path


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        img.load()
        return img.size


# --------------------------------------------------------------------------- client


def test_client_models(api: Client) -> None:
    models = {m.name: m for m in api.models()}
    assert {"breast-cancer", "purchase", "diabetes", "shapes"} <= set(models)
    assert models["shapes"].kind == "image" and models["shapes"].input is not None
    assert models["purchase"].features == list(PURCHASE_ROWS[0])
    assert api.model("shapes").default_method == models["shapes"].default_method
    assert api.ready() and api.health() == {"status": "ok"}


def test_client_predict_tabular_dicts_lists_and_arrays(api: Client) -> None:
    features = api.model("purchase").features
    assert features is not None
    by_dict = api.predict("purchase", PURCHASE_ROWS, top_k=2)
    rows = [[row[f] for f in features] for row in PURCHASE_ROWS]
    by_list = api.predict("purchase", rows)
    by_array = api.predict("purchase", np.array(rows, dtype=np.float64))
    single = api.predict("purchase", rows[0])  # one flat row is one instance
    assert len(by_dict) == len(by_list) == len(by_array) == 2 and len(single) == 1
    for a, b, c in zip(by_dict, by_list, by_array, strict=True):
        assert a.label == b.label == c.label
        assert a.score == pytest.approx(b.score, abs=1e-6) and b.score == pytest.approx(c.score, abs=1e-6)
    assert by_dict[0].top_k is not None and len(by_dict[0].top_k) == 2
    assert single[0].score == pytest.approx(by_dict[0].score, abs=1e-6)
    regression = api.predict("diabetes", [[50, 1, 26, 94, 188, 114, 49, 4, 4.6, 91]])
    assert regression[0].value is not None and regression[0].label is None


def test_client_predict_image_path_pil_bytes_array(api: Client, tmp_path: Path) -> None:
    img = shape_image(1)
    path = write_png(tmp_path / "one.png", img)
    forms = [str(path), path, img, path.read_bytes(), np.asarray(img)]
    preds = [api.predict("shapes", form)[0] for form in forms]
    assert all(p.index == preds[0].index for p in preds)
    for p in preds:
        assert p.score == pytest.approx(preds[0].score, abs=1e-5)
    assert len(api.predict("shapes", [path, img])) == 2


def test_client_explain_image_save_overlay(api: Client, tmp_path: Path) -> None:
    path = write_png(tmp_path / "wide.png", shape_image(2, 160, 120))
    result = api.explain("shapes", path, outputs=["overlay", "heatmap", "attributions"],
                         render={"sign": "absolute"})
    assert result.model == "shapes" and result.method and set(result.timings) >= {"total"}
    expl = result.explanations[0]
    saved = expl.save_overlay(tmp_path / "out" / "wide.overlay.png")
    assert png_size(saved.read_bytes()) == (160, 120)  # the submitted image's size
    assert expl.heatmap_png is not None and png_size(expl.heatmap_png) == (160, 120)
    info = api.model("shapes")
    assert isinstance(expl.attributions, np.ndarray)
    assert info.input is not None
    assert expl.attributions.shape == (info.input["height"], info.input["width"])
    png = api.explain_png("shapes", path)
    assert png_size(png) == (160, 120)


def test_client_explain_tabular(api: Client) -> None:
    result = api.explain("purchase", PURCHASE_ROWS[0], method="integrated_gradients",
                         params={"n_steps": 16}, outputs=["summary", "chart"])
    assert result.params["n_steps"] == 16
    expl = result.explanations[0]
    assert isinstance(expl.attributions, list)
    assert all(isinstance(a, FeatureAttribution) for a in expl.attributions)
    assert [a.feature for a in expl.attributions] == list(PURCHASE_ROWS[0])
    assert [a.value for a in expl.attributions] == pytest.approx(list(PURCHASE_ROWS[0].values()))
    assert expl.summary and expl.chart_png is not None and png_size(expl.chart_png)[0] > 0
    ranked = expl.ranked()
    assert abs(ranked[0].attribution) >= abs(ranked[-1].attribution)
    assert expl.n_steps is None and expl.faithfulness is None and expl.spread is None
    auto = api.explain("purchase", PURCHASE_ROWS[0], params={"n_steps": "auto"}, outputs=["faithfulness"])
    expl = auto.explanations[0]
    assert expl.n_steps in (16, 32, 64, 128) and isinstance(expl.converged, bool)
    assert expl.faithfulness is not None and set(expl.faithfulness) == {"deletion_auc", "insertion_auc"}
    sampled = api.explain("purchase", PURCHASE_ROWS[0], method="kernel_shap", params={"runs": 2})
    assert sampled.explanations[0].spread is not None and sampled.explanations[0].spread["runs"] == 2


def test_client_errors(api: Client) -> None:
    with pytest.raises(APIError) as info:
        api.predict("no-such-model", [[1.0]])
    assert info.value.status == 404 and "no-such-model" in info.value.detail
    with pytest.raises(APIError) as info:
        api.model("no-such-model")
    assert info.value.status == 404
    bad_row = {**PURCHASE_ROWS[0], "shoe_size": 44}
    with pytest.raises(APIError) as info:
        api.predict("purchase", [bad_row])
    assert info.value.status == 422 and info.value.title
    assert info.value.errors and "loc" in info.value.errors[0]
    with pytest.raises(APIError) as info:
        api.explain("purchase", PURCHASE_ROWS[0], method="no_such_method")
    assert info.value.status == 422
    with pytest.raises(APIError) as info:
        api.predict("shapes", b"not an image at all")
    assert info.value.status in (400, 415)


def test_client_connection_error() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", timeout=5) as client, pytest.raises(httpx.HTTPError):
        client.models()


# --------------------------------------------------------------------------- CLI


def test_cli_models(server_url: str) -> None:
    done = cli(server_url, "models")
    assert done.returncode == 0, done.stderr
    for name in ("breast-cancer", "purchase", "diabetes", "shapes"):
        assert name in done.stdout
    done = cli(None, "models", "--json", EXPLAINSERVE_URL=server_url)  # the URL from the environment
    assert done.returncode == 0, done.stderr
    assert {m["name"] for m in json.loads(done.stdout)["models"]} >= {"purchase", "shapes"}
    done = cli(None, "models", "--url", server_url)  # options also after the command
    assert done.returncode == 0 and "shapes" in done.stdout


def test_cli_predict(server_url: str, tmp_path: Path) -> None:
    row = json.dumps(PURCHASE_ROWS[0])
    done = cli(server_url, "predict", "purchase", row, "--json")
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout.splitlines()[0])
    assert line["input"] == "row 1" and line["prediction"]["label"] in ("purchase", "no_purchase")
    image = write_png(tmp_path / "pic.png", shape_image(3))
    done = cli(server_url, "predict", "shapes", str(image), "--top-k", "2")
    assert done.returncode == 0, done.stderr
    assert "pic.png" in done.stdout and "%" in done.stdout
    done = cli(server_url, "predict", "purchase", str(ROOT / "models" / "purchase" / "example.json"))
    assert done.returncode == 0 and "example.json:2" in done.stdout


def test_cli_explain_image_writes_overlay(server_url: str, tmp_path: Path) -> None:
    image = write_png(tmp_path / "cat.png", shape_image(4, 200, 100))
    out_dir = tmp_path / "out"
    done = cli(server_url, "explain", "shapes", str(image), "--out", str(out_dir), "--heatmap")
    assert done.returncode == 0, done.stderr
    overlay = out_dir / "cat.overlay.png"
    assert str(overlay) in done.stdout
    assert png_size(overlay.read_bytes()) == (200, 100)
    assert png_size((out_dir / "cat.heatmap.png").read_bytes()) == (200, 100)


def test_cli_explain_tabular_prints_ranked_table(api: Client, server_url: str) -> None:
    row = PURCHASE_ROWS[1]
    done = cli(server_url, "explain", "purchase", json.dumps(row))
    assert done.returncode == 0, done.stderr
    expected = api.explain("purchase", row).explanations[0].ranked()
    positions = [done.stdout.index(f" {a.feature} ") for a in expected]
    assert positions == sorted(positions), done.stdout  # strongest first
    assert f"{expected[0].attribution:+.4g}" in done.stdout
    assert "raised most by" in done.stdout or "lowered" in done.stdout  # the summary sentence


def test_cli_errors(server_url: str, tmp_path: Path) -> None:
    done = cli(server_url, "predict", "no-such-model", "{}")
    assert done.returncode == 1 and "404" in done.stderr
    done = cli(server_url, "explain", "shapes", str(tmp_path / "missing.png"))
    assert done.returncode == 2 and "missing.png" in done.stderr
    done = cli(server_url, "explain", "purchase", json.dumps(PURCHASE_ROWS[0]), "--params", "[1]")
    assert done.returncode == 2 and "--params" in done.stderr
    done = cli(f"http://127.0.0.1:{free_port()}", "models")
    assert done.returncode == 1 and "cannot reach" in done.stderr


def _results(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_explain_batch_images_skips_corrupt_and_resumes(server_url: str, tmp_path: Path) -> None:
    src, out_dir = tmp_path / "images", tmp_path / "results"
    src.mkdir()
    names = []
    for i in range(4):
        names.append(write_png(src / f"img{i}.png", shape_image(10 + i, 96 + 16 * i, 96, label=i)).name)
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    (src / "notes.txt").write_text("not an image, not listed")

    done = cli(server_url, "explain-batch", "shapes", str(src), "--out", str(out_dir), "--concurrency", "3")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "corrupt.png" in done.stderr
    assert "4 explained, 1 failed, 0 already done (of 5)" in done.stdout
    records = _results(out_dir / "results.jsonl")
    assert len(records) == 5
    by_key = {r["key"]: r for r in records}
    assert by_key["corrupt.png"]["status"] == "error"
    error = by_key["corrupt.png"]["error"]
    assert isinstance(error, dict) and error["status"] in (400, 415)
    for i, name in enumerate(names):
        record = by_key[name]
        assert record["status"] == "ok" and record["overlay"] == f"img{i}.overlay.png"
        assert png_size((out_dir / f"img{i}.overlay.png").read_bytes()) == (96 + 16 * i, 96)
    stamps = {name: (out_dir / f"{Path(name).stem}.overlay.png").stat().st_mtime_ns for name in names}

    # again: only the failed one is retried, and fails again
    done = cli(server_url, "explain-batch", "shapes", str(src), "--out", str(out_dir))
    assert done.returncode == 1
    assert "0 explained, 1 failed, 4 already done (of 5)" in done.stdout
    assert len(_results(out_dir / "results.jsonl")) == 5
    for name in names:
        assert (out_dir / f"{Path(name).stem}.overlay.png").stat().st_mtime_ns == stamps[name]

    # fixed: the last one is done, the run succeeds
    write_png(src / "corrupt.png", shape_image(20))
    done = cli(server_url, "explain-batch", "shapes", str(src), "--out", str(out_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 explained, 0 failed, 4 already done (of 5)" in done.stdout
    records = _results(out_dir / "results.jsonl")
    assert len(records) == 5 and all(r["status"] == "ok" for r in records)
    assert (out_dir / "corrupt.overlay.png").is_file()


def test_cli_explain_batch_csv_rows(server_url: str, tmp_path: Path) -> None:
    rows = PURCHASE_ROWS + [{**PURCHASE_ROWS[0], "age": 20 + i} for i in range(3)]
    source = tmp_path / "rows.csv"
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out_dir = tmp_path / "out"
    done = cli(server_url, "explain-batch", "purchase", str(source), "--out", str(out_dir), "--charts")
    assert done.returncode == 0, done.stdout + done.stderr
    records = _results(out_dir / "results.jsonl")
    assert [r["key"] for r in records] == list(range(1, len(rows) + 1))
    for record, row in zip(records, rows, strict=True):
        assert record["status"] == "ok" and record["summary"]
        attributions = record["attributions"]
        assert isinstance(attributions, list)
        assert [a["feature"] for a in attributions] == list(row)
        assert [a["value"] for a in attributions] == pytest.approx(list(row.values()))
        assert (out_dir / str(record["chart"])).is_file()

    # a bad cell fails only its row
    with source.open("a", newline="") as handle:
        csv.writer(handle).writerow(["x"] * len(rows[0]))
    done = cli(server_url, "explain-batch", "purchase", str(source), "--out", str(out_dir))
    assert done.returncode == 1
    assert f"0 explained, 1 failed, {len(rows)} already done" in done.stdout
    assert _results(out_dir / "results.jsonl")[-1]["status"] == "error"


def _write_csv(path: Path, header: list[str], rows: list[list[object]], separator: str = ",") -> Path:
    path.write_text("\n".join(separator.join(str(v) for v in line) for line in [header, *rows]) + "\n")
    return path


@pytest.mark.parametrize(("header", "extra_args", "message"), [
    (["age", "monthly_spend", "category_views", "cart_adds", "follows_brand"], [],
     "the header lacks 1 of model 'purchase's features: 'return_rate'"),
    (["id", "age", "monthly_spend", "category_views", "cart_adds", "follows_brand", "return_rate"], [],
     "column 'id' is not a feature of model 'purchase': to name the rows by it, add --key-column id"),
    (["age", "monthly_spend", "category_views", "cart_adds", "follows_brand", "retrun_rate"], [],
     "'return_rate' (is it the column 'retrun_rate'?)"),
    (["age", "monthly_spend", "category_views", "cart_adds", "follows_brand", "return_rate"], ["--key-column", "id"],
     "no column 'id' for --key-column"),
], ids=["missing-column", "text-id-column", "misspelt", "wrong-key-column"])
def test_cli_explain_batch_checks_the_csv_header_before_sending(server_url: str, tmp_path: Path, header: list[str],
                                                                extra_args: list[str], message: str) -> None:
    rows = [[f"r{i}" if name == "id" else 1 for name in header] for i in range(5)]
    source = _write_csv(tmp_path / "rows.csv", header, rows)
    before = httpx.get(server_url + "/metrics").text.count('route="explain"')
    done = cli(server_url, "explain-batch", "purchase", str(source), "--out", str(tmp_path / "out"), *extra_args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in " ".join(done.stderr.split()), done.stderr
    assert done.stderr.count("\n") <= 6  # one error, not one per row
    assert not (tmp_path / "out" / "results.jsonl").exists()
    assert httpx.get(server_url + "/metrics").text.count('route="explain"') == before  # nothing was sent


def test_cli_reads_a_header_with_spaces_after_the_commas(server_url: str, tmp_path: Path) -> None:
    row = PURCHASE_ROWS[0]
    source = _write_csv(tmp_path / "spaced.csv", ["id", *row], [[f"customer-{i}", *row.values()] for i in range(2)],
                        separator=", ")
    done = cli(server_url, "explain-batch", "purchase", str(source), "--out", str(tmp_path / "out"),
               "--key-column", "id", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["key"] for r in _results(tmp_path / "out" / "results.jsonl")] == ["customer-0", "customer-1"]
    predicted = cli(server_url, "predict", "purchase", str(_write_csv(tmp_path / "p.csv", list(row),
                                                                      [list(row.values())], ", ")), "--json")
    assert predicted.returncode == 0, predicted.stderr
