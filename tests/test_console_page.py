"""The console's files (balancer/console.py, balancer/static/index.html,
console.js, console.css) in-process: the page behind the token with a
Content-Security-Policy, its style and script without it, nothing inline for
the policy to block and nothing from another origin. tests/test_browser.py
drives the page in headless Chromium."""
from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

from balancer.console import ASSET_TYPES, PAGE, STATIC
from balancer_fakes import balancer, closed_port_url

TOKEN = "console-t0ken"
HTML = {"Accept": "text/html"}


async def get(client: Any, path: str, **kwargs: Any) -> tuple[int, str, str, dict[str, str]]:
    async with client.get(path, **kwargs) as resp:
        return resp.status, resp.content_type, await resp.text(), dict(resp.headers)


class PageParts(HTMLParser):
    """What a page loads (src, href) and what a CSP without 'unsafe-inline'
    would block: inline scripts, <style>, style= and on...= attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        self.urls += [value for name, value in attrs if name in ("src", "href") and value is not None]
        if tag == "style" or (tag == "script" and not names.get("src")):
            self.inline.append(f"<{tag}>")
        self.inline += [f"{tag} {name}=" for name in names if name == "style" or name.startswith("on")]


def test_the_page_needs_the_token_and_its_style_and_script_do_not():
    async def go() -> dict[str, tuple[int, str, str, dict[str, str]]]:
        async with balancer([closed_port_url()], token=TOKEN) as client:
            return {"page": await get(client, f"/?token={TOKEN}", headers=HTML),
                    "page without the token": await get(client, "/", headers=HTML),
                    **{name: await get(client, f"/{name}") for name in ASSET_TYPES},
                    "other": await get(client, "/console.json")}
    out = asyncio.run(go())
    assert out["page"][:2] == (200, "text/html")
    assert out["page without the token"][0] == 401
    assert {name: out[name][:2] for name in ASSET_TYPES} == {"console.js": (200, "text/javascript"),
                                                             "console.css": (200, "text/css")}
    assert "new WebSocket(" in out["console.js"][2]  # the browser client itself
    assert out["other"][0] == 401  # only those two names are public
    policy = out["page"][3]["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "connect-src 'self'" in policy  # its fetch calls and its WebSocket, to this balancer only


def test_the_page_has_nothing_inline_and_loads_only_what_the_balancer_serves():
    parts = PageParts()
    parts.feed(PAGE.read_text())
    assert parts.inline == []
    loaded = [url for url in parts.urls if not url.startswith(("#", "data:"))]
    assert not [url for url in loaded if re.match(r"^([a-z][a-z0-9+.-]*:|//)", url, re.IGNORECASE)]
    assert {urljoin("/", url) for url in loaded} >= {f"/{name}" for name in ASSET_TYPES}
    for name in ASSET_TYPES:  # and the files name no other origin either
        assert not re.search(r"https?://|//[a-z0-9]", (STATIC / name).read_text(), re.IGNORECASE), name

    async def go() -> list[int]:
        async with balancer([closed_port_url()]) as client:
            return [(await get(client, urljoin("/", url), headers=HTML))[0] for url in loaded]
    assert asyncio.run(go()) == [200] * len(loaded)
