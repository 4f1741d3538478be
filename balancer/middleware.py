"""Middlewares, outermost first: JSON errors, the token, the connection limit."""
from __future__ import annotations

import hmac
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from .apidocs import is_documentation
from .console import is_console_asset
from .errors import json_error
from .keys import CONFIG, TRAFFIC
from .metrics import METRICS

log = logging.getLogger("balancer.middleware")

# Monitoring answers without the token and past the connection limit: a
# scraper or probe inside the network must see the service most when it is
# overloaded (docs/metrics.md).
MONITORING = frozenset({"/health", "/metrics"})


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (404, 405, 413...) as JSON, like the balancer's."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            message = f"request body too large: {exc.text}" if exc.status == 413 else exc.reason
            return json_error(exc.status, message)
        raise


def presented_token(request: web.Request) -> str:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    return request.query.get("token", "")  # browsers cannot set headers on a WebSocket


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With a token configured, everything but /health, /metrics, the API
    documentation (/docs, /openapi.json, /asyncapi.json) and the console's
    style and script (/console.css, /console.js) needs it."""
    token = request.app[CONFIG].token
    public = request.path in MONITORING or is_documentation(request.path) or is_console_asset(request.path)
    if token and not public:
        # surrogatepass: a header's bytes that are not UTF-8 arrive as lone
        # surrogates; .encode() would raise on them (a 500, not a 401).
        if not hmac.compare_digest(presented_token(request).encode("utf-8", "surrogatepass"), token.encode()):
            log.warning("rejected unauthenticated %s %s from %s", request.method, request.path, request.remote)
            request.app[METRICS].rejected["unauthorized"].inc()
            return json_error(401, "missing or wrong token: send 'Authorization: Bearer <token>' or ?token=<token>")
    return await handler(request)


@web.middleware
async def limit_clients(request: web.Request, handler: Handler) -> web.StreamResponse:
    """At most max_connections WebSockets and HTTP requests at once, and (with
    max_connections_per_address) at most that many from one address; /health
    and /metrics always answer, so monitoring works under load."""
    config, traffic = request.app[CONFIG], request.app[TRAFFIC]
    limit, per_address = config.max_connections, config.max_connections_per_address
    if request.path in MONITORING:
        return await handler(request)
    if traffic.clients >= limit:
        log.warning("refused %s %s from %s: %d clients is the limit", request.method, request.path,
                    request.remote, limit)
        request.app[METRICS].rejected["too_many_clients"].inc()
        return json_error(429, f"too many connections: the limit is {limit}, try again shortly")
    address = request.remote or ""
    if per_address and traffic.by_address[address] >= per_address:
        log.warning("refused %s %s from %s: %d clients from one address is the limit", request.method,
                    request.path, address, per_address)
        request.app[METRICS].rejected["too_many_from_address"].inc()
        return json_error(429, f"too many connections from your address: the limit is {per_address}")
    traffic.clients += 1
    if per_address:
        traffic.by_address[address] += 1
    try:
        return await handler(request)
    finally:
        traffic.clients -= 1
        if per_address:
            traffic.by_address[address] -= 1
            if not traffic.by_address[address]:
                del traffic.by_address[address]
