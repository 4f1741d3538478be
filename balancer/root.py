"""The balancer's own routes: / (the console for a browser, service info,
HTTP ingest or a WebSocket) and /health."""
from __future__ import annotations

import asyncio

from aiohttp import web

from .console import console_page
from .ingest import ingest
from .keys import POOL, TRAFFIC
from .session import websocket


async def root(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await websocket(request)
    if request.method == "GET":
        if "text/html" in request.headers.get("Accept", ""):
            return console_page()  # the browser client
        return web.json_response({"service": "voice stream balancer",
                                  "websocket": "/ws", "workers": request.app[POOL].status()})
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    return await ingest(request)


def event_loop() -> str:
    """The running loop's kind: uvloop or asyncio (--event-loop)."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


async def health(request: web.Request) -> web.Response:
    """200 while any worker is in the ring, 503 otherwise; always JSON."""
    pool, traffic = request.app[POOL], request.app[TRAFFIC]
    up = pool.healthy()
    return web.json_response({"status": "ok" if up else "degraded", "workers": pool.status(),
                              "connections": len(traffic.sockets), "clients": traffic.clients,
                              "frames_in_flight": traffic.frames_in_flight,
                              "database": pool.database_status(), "event_loop": event_loop()},
                             status=200 if up else 503)
