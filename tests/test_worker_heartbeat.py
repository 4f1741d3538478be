"""The worker's gunicorn heartbeat: touched on the first loop turn, then at
most once per HEARTBEAT_SECONDS, far within the master's timeout."""
from __future__ import annotations

import time

from gunicorn.config import Config
from gunicorn.workers.workertmp import WorkerTmp

from worker.__main__ import HEARTBEAT_SECONDS, TIMEOUT_SECONDS, HeartbeatThreadWorker, WorkerServer
from worker.config import parse_args


def test_heartbeat_is_touched_at_most_once_per_interval():
    worker = HeartbeatThreadWorker.__new__(HeartbeatThreadWorker)  # only its heartbeat is exercised
    worker.tmp = WorkerTmp(Config())  # gunicorn's own file, as the master checks it
    try:
        worker.notify()
        first = worker.tmp.last_update()
        assert abs(first - time.monotonic()) < HEARTBEAT_SECONDS
        for _ in range(1000):  # a busy loop's turns
            worker.notify()
        assert worker.tmp.last_update() == first
        worker._beat -= HEARTBEAT_SECONDS  # as if the interval had passed
        worker.notify()
        assert worker.tmp.last_update() > first
    finally:
        worker.tmp.close()


def test_server_runs_the_throttled_worker_well_within_its_timeout():
    server = WorkerServer(parse_args(["--port", "7999"]))
    assert server.cfg.worker_class is HeartbeatThreadWorker
    assert server.cfg.timeout == TIMEOUT_SECONDS >= 30 * HEARTBEAT_SECONDS
