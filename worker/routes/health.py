"""GET /health: the balancer's view of this worker (503 while draining)."""
from __future__ import annotations

import sys

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ..context import current_worker

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> ResponseReturnValue:
    worker = current_worker()
    port = worker.config.port
    if worker.draining.is_set():
        return jsonify(status="draining", port=port), 503
    pipeline = worker.pipeline
    return jsonify(status="ok", port=port, accounts=len(pipeline.accounts), frames=pipeline.frames,
                   batches=pipeline.batches, speakers=worker.speakers.status(), database=worker.database_health(),
                   # Speakers run on onnxruntime: torch here would cost ~480 MB.
                   torch_loaded="torch" in sys.modules)
