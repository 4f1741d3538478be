"""GET /health: the balancer's view of this worker (503 while draining, and
while degraded: its record cannot be written, storage/guard.py), open to
anyone; POST /drain: start draining without stopping (a preStop hook,
worker/drain.py), from loopback and with the worker secret when there is one."""
from __future__ import annotations

import sys

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from . import current_worker
from .auth import verdict

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> ResponseReturnValue:
    worker = current_worker()
    port = worker.config.port
    if worker.draining.is_set():
        return jsonify(status="draining", port=port), 503
    pipeline = worker.pipeline
    state = dict(port=port, accounts=len(pipeline.accounts), frames=pipeline.frames, batches=pipeline.batches,
                 speakers=worker.speakers.status(), database=worker.database_health(),
                 # Speakers run on onnxruntime: torch here would cost ~480 MB.
                 torch_loaded="torch" in sys.modules,
                 # The caller's secret, judged: a balancer with none or the
                 # wrong one takes this worker out of its ring, saying why.
                 worker_secret=verdict().value)
    # Looked at here too (at most once a second): a degraded worker gets no
    # frames, so only the balancers' polls can see it recover.
    fault = pipeline.guard.fault()
    if fault is not None:
        # Any answer but 200 takes it out of the balancers' rings: its
        # accounts go to their next worker, which logs their lines from then on.
        return jsonify(status="degraded", reason=fault.reason, error=fault.message, log_dir=worker.config.log_dir,
                       **state), 503
    return jsonify(status="ok", **state)


# Only a process on the worker's own machine (its preStop hook) may drain it:
# with --host 0.0.0.0 any pod could otherwise take workers out of the ring.
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


@bp.post("/drain")
def drain() -> ResponseReturnValue:
    """/health and new frames answer 503 from now on (the balancers move this
    worker's accounts) while frames already here finish; SIGTERM still ends it."""
    if request.remote_addr not in LOOPBACK:
        return jsonify(error="/drain is only accepted from the worker's own machine"), 403
    worker = current_worker()
    worker.draining.set()
    return jsonify(status="draining", port=worker.config.port)
