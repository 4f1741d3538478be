"""The balancer's aiohttp application, assembled: WebSocket and HTTP ingest
of frames and the REST API, each routed to the account's worker."""
from __future__ import annotations

from aiohttp import web

from voicestream.stamps import FrameClock

from .apidocs import ASSET_ROUTE, DOCS_PATH, asyncapi_json, docs_asset, docs_page, openapi_json
from .background import worker_connections
from .config import BalancerConfig
from .console import ASSET_PATHS, console_asset
from .http_streams import HttpStreams
from .keys import CLOCK, CONFIG, HTTP_STREAMS, POOL, TRAFFIC
from .metrics import METRICS, create_metrics, metrics_page
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
    app[HTTP_STREAMS] = HttpStreams()
    app[METRICS] = create_metrics(config, app[POOL], app[TRAFFIC])
    app.cleanup_ctx.append(worker_connections)
    app.on_shutdown.append(close_idle_sockets)
    app.router.add_route("*", "/", root)
    for path in sorted(ASSET_PATHS):  # the console's style and script
        app.router.add_get(path, console_asset)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_route("*", "/accounts/{account}/{tail:.*}", proxy)
    app.router.add_post("/embed", proxy)
    app.router.add_post("/compare", proxy)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/asyncapi.json", asyncapi_json)
    app.router.add_get(DOCS_PATH, docs_page)
    app.router.add_get(ASSET_ROUTE, docs_asset)  # the page's script and style
    return app
