"""The Ray cluster fixture gives every component of its nodes a port of its own: the kernel may
hand out a just-released port again, and Ray refuses to start a node whose components share one
(a `make test` run failed when a node's object manager got the GCS's port)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures import ray_cluster
from tests.fixtures.ray_cluster import RayCluster


def test_every_port_of_the_cluster_is_distinct_even_when_the_kernel_repeats_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    repeats = [40001, 40001, 40002, 40001, 40002, 40003, 40003, 40004]
    handed_out: Iterator[int] = iter(repeats + list(range(40005, 40100)))
    monkeypatch.setattr(ray_cluster, "free_port", lambda: next(handed_out))
    cluster = RayCluster(nodes=2)
    try:
        args = cluster._node_args(0) + cluster._node_args(1)
        metrics = ("AUTOSCALER_METRIC_PORT", "DASHBOARD_METRIC_PORT")
        ports = [cluster.gcs_port, *(int(cluster.env[key]) for key in metrics)]
        ports += [int(arg.split("=", 1)[1]) for arg in args if arg.split("=", 1)[0].endswith("-port")]
        assert len(ports) == 3 + 2 * 6
        assert len(set(ports)) == len(ports)
        assert cluster.gcs_port == 40001 and int(cluster.env["AUTOSCALER_METRIC_PORT"]) == 40002
    finally:
        cluster.stop()
