"""Prometheus metrics.

Outcome counters and duration histograms are updated by the worker; queue depth and running
count are read from the database at scrape time (so they are right whichever process runs
the worker).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

EXECUTIONS = Counter("exec_api_executions_total", "Finished executions by outcome", ["status"])
DURATION = Histogram(
    "exec_api_execution_duration_seconds",
    "Run time of finished executions",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
QUEUE_WAIT = Histogram(
    "exec_api_queue_wait_seconds",
    "Time from submission to start",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
READY_KERNELS = Gauge("exec_api_ready_kernels", "Pre-started kernels ready in this process")
RECOVERED = Counter("exec_api_orphans_recovered_total", "Orphaned executions recovered", ["policy"])


class QueueCollector(Collector):
    def __init__(self) -> None:
        self.enabled = True

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("exec_api_queue_depth", "Executions waiting in the queue")
        running = GaugeMetricFamily("exec_api_running", "Executions running now")
        try:
            from exec_api.core.db import get_sessionmaker
            from exec_api.services.queue import queue_stats

            with get_sessionmaker()() as db:
                stats = queue_stats(db)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB is down
            return
        depth.add_metric([], stats["queued"])
        running.add_metric([], stats["running"])
        yield depth
        yield running


_registered = False


def register_queue_collector() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(QueueCollector())
        _registered = True
