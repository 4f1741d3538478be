"""GET /metrics: this worker process's Prometheus metrics (worker/metrics.py),
in the text format the scraper asks for. Like /health, no token: the workers
sit inside the network, behind the balancers (docs/metrics.md)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from flask import Blueprint, Response, current_app, request
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ..context import Worker

# The key of app.extensions that holds the worker's CollectorRegistry.
EXTENSION = "voice_worker_metrics"

bp = Blueprint("metrics", __name__)


class WorkerState(Collector):
    """What the worker already keeps, read at scrape time: accounts, draining,
    degraded and the free space its record has, and with --database the
    database's state and this host's spool."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        worker = self.worker
        yield GaugeMetricFamily("voicestream_worker_accounts", "Accounts whose streaming state this worker holds.",
                                value=len(worker.pipeline.accounts))
        yield GaugeMetricFamily("voicestream_worker_draining", "1 after SIGTERM: new frames are refused with 503.",
                                value=1.0 if worker.draining.is_set() else 0.0)
        guard = worker.pipeline.guard
        fault = guard.fault()  # the disk looked at, at most once a second
        yield GaugeMetricFamily("voicestream_worker_degraded",
                                "1 while this worker cannot write its frames' record (a full disk, under "
                                "--min-free-mb, an unusable --log-dir): frames and /health answer 503.",
                                value=0.0 if fault is None else 1.0)
        if guard.free_bytes is not None:
            yield GaugeMetricFamily("voicestream_worker_record_free_bytes",
                                    "Free bytes where the frame logs (and with --database the spool) are, the "
                                    "least of them, at the last look (at most a second before a batch).",
                                    value=guard.free_bytes)
        database = worker.database_health()
        info = GaugeMetricFamily("voicestream_worker_database_info",
                                 "Where frame rows and voiceprints go: mode embedded (this host's files) or "
                                 "postgresql (--database).", labels=["mode"])
        info.add_metric([str(database.get("mode", "embedded"))], 1.0)
        yield info
        if "state" not in database:  # embedded: no database to be up or down
            return
        yield GaugeMetricFamily("voicestream_worker_database_up",
                                "1 while the shared PostgreSQL is reachable, 0 while frame rows spool.",
                                value=1.0 if database["state"] == "up" else 0.0)
        yield GaugeMetricFamily("voicestream_worker_spooled_rows",
                                "Frame rows in this host's spool, waiting for PostgreSQL.",
                                value=database.get("spooled", 0))
        yield CounterMetricFamily("voicestream_worker_dropped_rows",
                                  "Frame rows never stored: the spool was full, or PostgreSQL would refuse them.",
                                  value=database.get("dropped", 0))
        yield GaugeMetricFamily("voicestream_worker_spooled_finals",
                                "Final labels (segments) in this host's spool, waiting for their rows to reach "
                                "PostgreSQL.", value=database.get("spooled_finals", 0))
        yield CounterMetricFamily("voicestream_worker_dropped_finals",
                                  "Final labels (segments) never stored: the spool was full, or PostgreSQL would "
                                  "refuse them.", value=database.get("dropped_finals", 0))


def worker_registry(worker: Worker) -> CollectorRegistry:
    """The registry of one worker (create_app keeps it in app.extensions)."""
    registry = CollectorRegistry()
    tracker = worker.pipeline.speakers
    owned = (*worker.pipeline.metrics.collectors, *worker.speakers.metrics.collectors,
             *(tracker.metrics.collectors if tracker is not None else ()))
    for collector in (*owned, WorkerState(worker)):
        registry.register(collector)
    return registry


@bp.get("/metrics")
def metrics() -> Response:
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    registry = cast(CollectorRegistry, current_app.extensions[EXTENSION])
    return Response(encode(registry), content_type=content_type)
