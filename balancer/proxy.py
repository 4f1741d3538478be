"""The REST API (speakers, /embed, /compare) proxied to the workers: calls
under /accounts/{account}/ to the account's worker, stateless ones to any
healthy worker.

Only a refused connection is tried on the next worker. A request that may
have reached a worker is never sent twice: an enrollment stored just before
its worker died would be stored again. The client gets a JSON error saying so.
"""
from __future__ import annotations

import logging
import re
import uuid

import aiohttp
from aiohttp import web
from yarl import URL

from .errors import json_error
from .forward import NO_WORKER
from .keys import CONFIG, POOL, SESSION
from .packets import PacketError, check_account

log = logging.getLogger("balancer.proxy")

# A REST path below /accounts/{account}/: plain segments, never '.' or '..'
# (which the HTTP client would resolve into another worker path).
PATH_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]+")
INVALID_PATH = "invalid path: segments of A-Z a-z 0-9 _ . ~ -, none of them '.' or '..'"
# Headers a worker needs; the client's credentials stay here. Authorization
# in particular: the session's own (the worker secret, background.py) is the
# one a worker gets.
FORWARDED_HEADERS = ("content-type", "accept")


def valid_tail(tail: str) -> bool:
    return not tail or all(PATH_SEGMENT.fullmatch(part) and part not in (".", "..") for part in tail.split("/"))


async def proxy(request: web.Request) -> web.StreamResponse:
    app, pool, config = request.app, request.app[POOL], request.app[CONFIG]
    account = request.match_info.get("account")
    if account is not None:
        try:
            check_account(account, config.max_account_length)
        except PacketError as exc:
            return json_error(400, str(exc))
        if not valid_tail(request.match_info.get("tail", "")):
            return json_error(400, INVALID_PATH)
        candidates = pool.ranked(account)
    else:
        candidates = pool.ranked(uuid.uuid4().hex)  # spreads stateless calls
    body = await read_body(request, config.max_upload_bytes)
    headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_HEADERS}
    query = [(k, v) for k, v in request.query.items() if k != "token"]
    for worker in candidates:
        url = URL(worker).with_path(request.rel_url.raw_path, encoded=True).with_query(query)
        try:
            async with app[SESSION].request(request.method, url, data=body, headers=headers) as resp:
                return web.Response(body=await resp.read(), status=resp.status,
                                    content_type=resp.content_type or "application/json")
        except aiohttp.ClientConnectorError as exc:  # refused: the request never left
            pool.mark(worker, False, f"proxy failed: {exc.__class__.__name__}")
        except (aiohttp.ClientError, TimeoutError) as exc:  # reset, closed mid-answer, timed out
            failure = exc.__class__.__name__
            log.warning("worker %s failed during %s %s: %s", worker, request.method, request.path, failure)
            return json_error(502, f"the worker failed in the middle of the request ({failure}); "
                                   "it may have been applied: check before sending it again")
    return json_error(503, NO_WORKER)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, refused with 413 past limit (REST uploads may be larger than frames)."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return bytes(body)
