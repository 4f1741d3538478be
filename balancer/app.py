"""The balancer's aiohttp application, assembled: WebSocket and HTTP ingest
of frames and the REST API, each routed to the account's worker."""
from __future__ import annotations

from aiohttp import web

from voicestream.stamps import FrameClock

from .background import worker_connections
from .config import BalancerConfig
from .keys import CLOCK, CONFIG, POOL, TRAFFIC
from .middleware import authenticate, json_errors, limit_clients
from .proxy import proxy
from .root import health, root
from .session import close_idle_sockets, websocket
from .traffic import Traffic
from .workers import WorkerPool


def create_app(config: BalancerConfig | None = None) -> web.Application:
    config = config or BalancerConfig()
    app = web.Application(client_max_size=config.max_message_bytes,
                          middlewares=[json_errors, authenticate, limit_clients])
    app[CONFIG] = config
    app[POOL] = WorkerPool(config.workers)
    app[CLOCK] = FrameClock()
    app[TRAFFIC] = Traffic()
    app.cleanup_ctx.append(worker_connections)
    app.on_shutdown.append(close_idle_sockets)
    app.router.add_route("*", "/", root)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/accounts/{account}/{tail:.*}", proxy)
    app.router.add_post("/embed", proxy)
    app.router.add_post("/compare", proxy)
    return app
