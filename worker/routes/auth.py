"""The worker secret at the door: with --worker-secret set, every request but
/health and /metrics must carry it (voicestream/worker_secret.py), or it is
answered 401 before any view runs, so a refused request writes nothing and
touches no account. /drain needs it too: it is loopback-only already, but any
process on the machine (another container of the pod) shares loopback, and
the preStop hook (worker/drain.py) has the secret in its environment."""
from __future__ import annotations

import logging

from flask import Response, request
from werkzeug.exceptions import HTTPException

from voicestream.worker_secret import HEADER, Verdict, check, refusal

from . import current_worker
from .replies import error

log = logging.getLogger("worker.auth")

# Monitoring answers anyone, like the balancer's (docs/metrics.md): probes
# and scrapers do not hold the secret. /health reports the caller's verdict
# (so a balancer with the wrong secret takes the worker out of its ring and
# says why) and nothing else about it.
OPEN_PATHS = frozenset({"/health", "/metrics"})


def verdict() -> Verdict:
    """The current request's credentials against this worker's secret."""
    return check(request.headers.get(HEADER), current_worker().config.worker_secret)


def require_secret() -> Response | None:
    """A before_request hook: the 401 of a request without the secret, None to go on."""
    if request.path in OPEN_PATHS:
        return None
    found = verdict()
    if found in (Verdict.ACCEPTED, Verdict.NOT_REQUIRED):
        return None
    # A reply sent with the body unread makes gunicorn drop the keep-alive
    # connection, and the next request a balancer sends on it fails: read it
    # (up to --max-body-bytes; past that the connection is dropped anyway).
    try:
        request.get_data(cache=False)
    except HTTPException:  # too large, or the client went away mid-body
        pass
    log.warning("refused %s %s from %s: %s worker secret", request.method, request.path, request.remote_addr,
                found.value)
    refused = error(401, refusal(found))
    refused.headers["WWW-Authenticate"] = 'Bearer realm="voicestream worker"'
    return refused
