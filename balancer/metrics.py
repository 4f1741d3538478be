"""The balancer's Prometheus metrics and GET /metrics (docs/metrics.md lists
them all).

One CollectorRegistry per application, not prometheus_client's global one:
tests build several balancers in one process. What the frame path counts is
pre-bound label children (a dict lookup and a locked add, ~0.4 us; a
histogram's observe ~0.9 us); what the app already knows (connections, the
ring) is read at scrape time by a collector and costs the frame path nothing.

Every label set is bounded: outcomes and reasons are the fixed tuples below,
and a worker's URL comes from --workers. An account code or a stream id is
never a label: one series per account would grow without end.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from voicestream.replies import FrameReply

from .config import BalancerConfig
from .routing import rank_workers
from .traffic import Traffic
from .workers import WorkerPool

# How a frame given to a worker was answered. ok and duplicate are the
# worker's analysis (duplicate: a retry of a frame already processed);
# refused: the worker refused the frame (4xx: a bad WAV, an invalid seq);
# worker_error: a worker's 5xx that is not retried (not 500, 502, 503, 504); unreadable: a reply
# that is not the protocol's; no_worker: every worker was down or failed it.
OUTCOMES = ("ok", "duplicate", "refused", "worker_error", "unreadable", "no_worker")
# Why one attempt at a worker failed and the frame went on to the next one:
# timeout (--forward-timeout), refused (the connection), error (reset,
# disconnected), unavailable (502/503/504), failed (a whole-batch 500: it
# failed mid-batch), not_sent (it waited behind a request that timed out, or
# for a worker that left the ring).
FAILURES = ("timeout", "refused", "error", "unavailable", "failed", "not_sent")
# Requests and WebSocket messages the balancer answered with an error itself,
# and WebSockets it closed for waiting too long on their client.
REJECTIONS = ("invalid", "unauthorized", "too_many_clients", "too_many_from_address", "internal",
              "message_timeout", "idle_timeout")
# Frames are 100 ms of audio: a reply within a few ms is the normal case, one
# past forward_timeout (5 s by default) never comes.
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Children(dict[Any, Any]):
    """A labelled metric's children by label values, bound on first use; the
    configured workers are bound up front, so a scrape shows them at 0."""

    def __init__(self, metric: Counter | Histogram) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, key: str | tuple[str, ...]) -> Any:
        child = self[key] = self.metric.labels(*key) if isinstance(key, tuple) else self.metric.labels(key)
        return child

    def bind(self, keys: Iterable[str | tuple[str, ...]]) -> Children:
        for key in keys:
            self.__missing__(key)
        return self


class BalancerMetrics:
    """The frame path's counters and histograms. ``BalancerMetrics()`` alone
    (UNCOUNTED) counts into a registry nobody serves: forward_frame called
    outside an app, as tests do."""

    def __init__(self, workers: tuple[str, ...] = ()) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_received = Counter("voicestream_balancer_frames_received_total",
                                       "Frames taken from clients and sent on to a worker (once per frame, "
                                       "whatever the attempts).", registry=r)
        answered = Counter("voicestream_balancer_frames_answered_total",
                           "Frames answered to clients, by outcome.", ["outcome"], registry=r)
        self.answered = {outcome: answered.labels(outcome) for outcome in OUTCOMES}
        rejected = Counter("voicestream_balancer_rejected_total",
                           "Requests and WebSocket messages the balancer refused itself, and WebSockets it closed "
                           "for waiting too long on their client, by reason.",
                           ["reason"], registry=r)
        self.rejected = {reason: rejected.labels(reason) for reason in REJECTIONS}
        self.frame_seconds = Histogram("voicestream_balancer_frame_seconds",
                                       "A frame's time in the balancer: taken from its client until its reply, "
                                       "over every attempt.", buckets=SECONDS_BUCKETS, registry=r)
        self.forward_seconds = Children(Histogram(
            "voicestream_balancer_forward_seconds",
            "One attempt at a worker that answered: frame handed to the worker's link until its answer "
            "(a batch slot's wait included).", ["worker"], buckets=SECONDS_BUCKETS, registry=r)).bind(workers)
        self.failures = Children(Counter("voicestream_balancer_forward_failures_total",
                                         "Attempts at a worker that failed, by worker and reason.",
                                         ["worker", "reason"], registry=r)
                                 ).bind((worker, reason) for worker in workers for reason in FAILURES)
        self.retries = Counter("voicestream_balancer_retries_total",
                               "Attempts after a failed one: the frame sent to the next worker.", registry=r)
        self.reroutes = Counter("voicestream_balancer_reroutes_total",
                                "Frames answered by a worker other than the account's first choice among all "
                                "configured workers (it was out of the ring or failed the frame).", registry=r)

    def worker_answered(self, status: int, answer: FrameReply) -> None:
        """Counts a frame a worker answered with status (not a retry status)."""
        if status == 200:
            outcome = "duplicate" if answer.get("duplicate") else "ok"
        elif answer.get("duplicate"):  # 409: an older seq of the stream, already processed
            outcome = "duplicate"
        else:
            outcome = "refused" if status < 500 else "worker_error"
        self.answered[outcome].inc()

    def rerouted(self, workers: tuple[str, ...], account: str, worker: str) -> None:
        """Called when the frame was answered by ``worker`` while the ring
        was short or not on the first attempt: counts it unless ``worker`` is
        the account's first choice of all the configured workers."""
        if rank_workers(account, workers)[0] != worker:
            self.reroutes.inc()


UNCOUNTED = BalancerMetrics()
METRICS = web.AppKey("metrics", BalancerMetrics)


class ServingState(Collector):
    """What the app already keeps, read at scrape time."""

    def __init__(self, config: BalancerConfig, pool: WorkerPool, traffic: Traffic) -> None:
        self.config, self.pool, self.traffic = config, pool, traffic

    def collect(self) -> Iterator[Metric]:
        traffic, pool = self.traffic, self.pool
        yield GaugeMetricFamily("voicestream_balancer_websocket_connections", "Open client WebSockets.",
                                value=len(traffic.sockets))
        yield GaugeMetricFamily("voicestream_balancer_clients",
                                "Open WebSockets plus HTTP requests in progress: what --max-connections limits.",
                                value=traffic.clients)
        yield GaugeMetricFamily("voicestream_balancer_max_clients", "--max-connections.",
                                value=self.config.max_connections)
        yield GaugeMetricFamily("voicestream_balancer_frames_in_flight", "Frames at workers now.",
                                value=traffic.frames_in_flight)
        up = GaugeMetricFamily("voicestream_balancer_worker_up",
                               "1 while the worker is in this balancer's ring, 0 while it is out.", labels=["worker"])
        exits = CounterMetricFamily("voicestream_balancer_worker_exits",
                                    "Times the worker left this balancer's ring.", labels=["worker"])
        for worker, state in pool.status().items():
            up.add_metric([worker], 1.0 if state == "up" else 0.0)
            exits.add_metric([worker], pool.exits[worker])
        yield up
        yield exits


def create_metrics(config: BalancerConfig, pool: WorkerPool, traffic: Traffic) -> BalancerMetrics:
    metrics = BalancerMetrics(config.workers)
    metrics.registry.register(ServingState(config, pool, traffic))
    return metrics


async def metrics_page(request: web.Request) -> web.Response:
    """GET /metrics: the text format Prometheus asks for (OpenMetrics when its
    Accept header prefers it). No token, like /health: see docs/metrics.md."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(request.app[METRICS].registry), headers={"Content-Type": content_type})
