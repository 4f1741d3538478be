"""python -m worker --port 7001: one gunicorn process with threads.

One process per port on purpose: an account's VAD state and speech buffer live
in that process's memory, so a second process behind the same port would split
an account's frames between two states.
"""
from __future__ import annotations

import os
import signal
import sys
import time

# Before numpy loads: its OpenBLAS would start a thread per core that spins
# after every call. Three workers share two cores, and a GE2E window cost
# 18 ms of CPU for 9 ms of work (10 ms with one thread).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from gunicorn.app.base import BaseApplication  # noqa: E402 - after the thread limits above
from gunicorn.workers.gthread import ThreadWorker  # noqa: E402

from .config import WorkerConfig, exposure, insecure_warning, parse_args  # noqa: E402

# gunicorn's master restarts a worker whose heartbeat is older than this.
TIMEOUT_SECONDS = 120
# How often the worker touches its heartbeat: far within TIMEOUT_SECONDS.
HEARTBEAT_SECONDS = 1.0


class HeartbeatThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, touching its heartbeat file at most once per
    HEARTBEAT_SECONDS instead of on every turn of its event loop: at 2,000
    frames/s that utime() was 12.5% of a busy worker's samples even in /dev/shm
    (a turn per request and per finished request). The master only needs it
    within TIMEOUT_SECONDS; the loop turns at least once a second when idle."""

    _beat = float("-inf")  # the first turn beats

    def notify(self) -> None:
        now = time.monotonic()
        if now - self._beat >= HEARTBEAT_SECONDS:
            self._beat = now
            super().notify()


class WorkerServer(BaseApplication):
    def __init__(self, config: WorkerConfig) -> None:
        self.worker_config = config
        super().__init__()

    def load_config(self) -> None:
        c = self.worker_config
        settings = {
            "bind": f"{c.host}:{c.port}",
            "workers": 1,
            "worker_class": HeartbeatThreadWorker,
            "threads": c.threads,
            "graceful_timeout": int(c.graceful_timeout),
            "timeout": TIMEOUT_SECONDS,
            "keepalive": 75,  # longer than the balancer's idle keep-alive
            "accesslog": None,
            "loglevel": "warning",
            "proc_name": f"voice-worker-{c.port}",
            # The heartbeat file; on a disk it was 13% of a busy worker's
            # samples (gunicorn's docs advise /dev/shm).
            "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
            "post_worker_init": drain_on_sigterm,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        # Imported here so the models load in the serving process, after fork.
        from .app import create_app
        return create_app(self.worker_config)


def drain_on_sigterm(worker) -> None:
    """gunicorn's SIGTERM handler only stops the accept loop; before it runs,
    tell the app so /health and new frames get 503 while in-flight frames
    finish (within graceful_timeout)."""
    from .context import EXTENSION  # loaded with the app, after fork

    stop = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame) -> None:
        worker.wsgi.extensions[EXTENSION].draining.set()
        if callable(stop):
            stop(signum, frame)
    signal.signal(signal.SIGTERM, on_sigterm)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    # Before gunicorn binds or forks: a worker open to the network refuses to
    # start, with the same status as a bad option.
    refused = exposure(config)
    if refused is not None:
        print(f"python -m worker: {refused}", file=sys.stderr)
        raise SystemExit(2)
    warning = insecure_warning(config)
    if warning is not None:
        print(f"python -m worker: {warning}", file=sys.stderr, flush=True)
    WorkerServer(config).run()


if __name__ == "__main__":
    main()
