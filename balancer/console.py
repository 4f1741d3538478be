"""The console a browser gets at / (balancer/static/index.html), and its style
and script, /console.css and /console.js: files of the project, served by the
balancer itself (no CDN: it must work on a closed network).

With a token configured the page needs it (?token=, which the page then sends
on its own calls); its style and script answer without it, like the API
documentation's (balancer/middleware.py): the same files for everyone, they
give no access."""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .apidocs.routes import PAGE_POLICY

STATIC = Path(__file__).parent / "static"
PAGE = STATIC / "index.html"
# What the page loads, by exact name: each is served at /<name>.
ASSET_TYPES = {"console.js": "text/javascript", "console.css": "text/css"}
ASSET_PATHS = frozenset(f"/{name}" for name in ASSET_TYPES)
# The documentation page's rules: the console too may load only what this
# balancer serves, and connect only to it (fetch, and its WebSocket).
CONSOLE_POLICY = PAGE_POLICY


def is_console_asset(path: str) -> bool:
    return path in ASSET_PATHS


def console_page() -> web.FileResponse:
    response = web.FileResponse(PAGE, headers={"Content-Type": "text/html; charset=utf-8"})
    response.headers["Content-Security-Policy"] = CONSOLE_POLICY
    return response


async def console_asset(request: web.Request) -> web.FileResponse:
    name = request.path.removeprefix("/")
    return web.FileResponse(STATIC / name, headers={"Content-Type": f"{ASSET_TYPES[name]}; charset=utf-8"})
