"""The documentation routes: /openapi.json, /asyncapi.json and the /docs page,
whose HTML, script and style are files of balancer/static/docs/ served by the
balancer itself (it must work on a closed network: no CDN, no third-party
code). All of them answer without the token (balancer/middleware.py)."""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .asyncapi import asyncapi_document
from .openapi import openapi_document
from .version import package_version

ASSETS = Path(__file__).resolve().parents[1] / "static" / "docs"
PAGE = "index.html"
# What the page loads, by exact name: nothing else under /docs/ is served.
ASSET_TYPES = {"docs.js": "text/javascript", "docs.css": "text/css"}
DOCS_PATH = "/docs"
ASSET_ROUTE = DOCS_PATH + "/{asset}"
# Public paths, exact: a path that only starts with /docs/ stays behind the token.
PUBLIC_PATHS = frozenset({"/openapi.json", "/asyncapi.json", DOCS_PATH, *(f"{DOCS_PATH}/{a}" for a in ASSET_TYPES)})
# The page may load only what this balancer serves.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def is_documentation(path: str) -> bool:
    return path in PUBLIC_PATHS


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(package_version()))


async def asyncapi_json(request: web.Request) -> web.Response:
    # The server is where this client reached the balancer: ws:// or, behind TLS, wss://.
    protocol = "wss" if request.scheme == "https" else "ws"
    return web.json_response(asyncapi_document(package_version(), request.host, protocol))


async def docs_page(request: web.Request) -> web.FileResponse:
    response = web.FileResponse(ASSETS / PAGE, headers={"Content-Type": "text/html; charset=utf-8"})
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    return response


async def docs_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["asset"]
    if name not in ASSET_TYPES:
        raise web.HTTPNotFound()
    return web.FileResponse(ASSETS / name, headers={"Content-Type": f"{ASSET_TYPES[name]}; charset=utf-8"})
