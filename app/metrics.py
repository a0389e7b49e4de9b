"""Prometheus metrics of one app instance (its own registry, so apps in one process don't mix)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


class _DeviceMemory(Collector):
    def __init__(self, probe: Callable[[], dict[str, int]]):
        self._probe = probe

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("explainserve_device_memory_bytes",
                                   "Memory allocated by tensors on each device", labels=["device"])
        for device, used in self._probe().items():
            family.add_metric([device], used)
        yield family


class Metrics:
    """Request, latency, queue and batch metrics; also the batcher's observer."""

    def __init__(self, memory_probe: Callable[[], dict[str, int]] | None = None):
        self.registry = CollectorRegistry()
        self.requests = Counter("explainserve_requests", "HTTP requests by route, model, method, status",
                                ["route", "model", "method", "status"], registry=self.registry)
        self.latency = Histogram("explainserve_request_seconds", "Request latency by phase",
                                 ["route", "model", "phase"], buckets=_LATENCY_BUCKETS,
                                 registry=self.registry)
        self.queue_rows = Gauge("explainserve_queue_rows", "Work rows queued per model", ["model"],
                                registry=self.registry)
        self.batch_items = Histogram("explainserve_batch_requests", "Requests per computed batch",
                                     ["model"], buckets=_SIZE_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("explainserve_batch_rows", "Work rows per computed batch",
                                    ["model"], buckets=_SIZE_BUCKETS, registry=self.registry)
        self.dropped = Counter("explainserve_dropped_items", "Queued work dropped before compute",
                               ["model", "reason"], registry=self.registry)
        if memory_probe is not None:
            self.registry.register(_DeviceMemory(memory_probe))

    def batch_formed(self, model: str, items: int, rows: int) -> None:
        self.batch_items.labels(model).observe(items)
        self.batch_rows.labels(model).observe(rows)

    def queue_changed(self, model: str, rows: int) -> None:
        self.queue_rows.labels(model).set(rows)

    def item_dropped(self, model: str, reason: str) -> None:
        self.dropped.labels(model, reason).inc()
