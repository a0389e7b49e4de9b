"""bench/ab.py: two servers side by side (a commit exported by git, and this checkout), loaded in
turn, and the paired ratios of their CPU per request."""

from __future__ import annotations

import re
import statistics
import subprocess
from pathlib import Path

import httpx
import pytest

from bench.ab import Window, export_commit, main, paired_summary
from bench.catalogs import subset_catalog
from bench.common import ROOT
from bench.servers import start_ours


def test_the_summary_is_the_median_of_each_rounds_ratio() -> None:
    a = [Window(2.0, 1.0, 500.0, 0), Window(3.0, 1.5, 400.0, 0), Window(2.5, 1.0, 450.0, 0)]
    b = [Window(1.8, 0.9, 520.0, 0), Window(3.3, 1.2, 390.0, 0), Window(2.0, 1.0, 480.0, 0)]
    summary = paired_summary(a, b)
    assert summary["ratios"] == pytest.approx([0.9, 1.1, 0.8])
    assert summary["median_ratio"] == pytest.approx(0.9)
    assert summary["b_cheaper"] == 2 and summary["rounds"] == 3
    assert summary["median_event_loop_ratio"] == pytest.approx(0.9)  # 0.9, 0.8, 1.0
    assert summary["median_cpu_ms"] == pytest.approx((2.5, 2.0))
    assert summary["median_requests_per_s"] == pytest.approx((450.0, 480.0))
    with pytest.raises(ValueError):
        paired_summary(a, b[:2])
    with pytest.raises(ValueError):
        paired_summary([], [])


def test_a_commit_is_exported_with_its_tracked_files(tmp_path: Path) -> None:
    commit = export_commit("HEAD", tmp_path)
    expected = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout.strip()
    assert commit == expected
    for path in ("app/__main__.py", "README.md", "models/catalog.toml"):
        shown = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, check=True, capture_output=True).stdout
        assert (tmp_path / path).read_bytes() == shown
    with pytest.raises(subprocess.CalledProcessError):
        export_commit("no-such-ref-anywhere", tmp_path / "none")


def test_the_base_server_runs_the_exported_tree(tmp_path: Path) -> None:
    root = tmp_path / "base"
    root.mkdir()
    export_commit("HEAD", root)
    server = start_ours("cpu", subset_catalog(["breast-cancer"], tmp_path), {"HOST_WORKERS": "1"}, tmp_path,
                        name="a", root=root)
    try:
        server.wait_ready(120)
        # `python -m app` puts its working folder first on the import path: the exported tree's app.
        assert Path(f"/proc/{server.proc.pid}/cwd").resolve() == root.resolve()
        environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
        assert any(entry.startswith(b"PYTHONPATH=") and entry.endswith(str(root).encode()) for entry in environ)
        assert b"HOST_WORKERS=1" in environ
        assert httpx.get(server.url + "/v1/models", timeout=10, trust_env=False).status_code == 200
    finally:
        server.stop()


def test_two_servers_are_loaded_in_turn_and_compared(tmp_path: Path) -> None:
    out = tmp_path / "ab.md"
    assert main(["--base", "HEAD", "--scenario", "tabular-ig", "--concurrency", "2", "--rounds", "2",
                 "--seconds", "1", "--env-b", "HOST_WORKERS=1", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# A/B: tabular-ig at 2 concurrent")
    assert "B with HOST_WORKERS=1" in text
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 2
    ratios = []
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        a_ms, b_ms, ratio = float(cells[1]), float(cells[4]), float(cells[7])
        assert a_ms > 0 and b_ms > 0
        assert ratio == pytest.approx(b_ms / a_ms, abs=2e-3)  # the table's figures are rounded
        assert cells[8] == "0 / 0"  # every request answered
        ratios.append(ratio)
    median = float(re.search(r"median ([0-9.]+)\*\*", text).group(1))  # type: ignore[union-attr]
    assert median == pytest.approx(statistics.median(ratios), abs=2e-3)
