"""The balancer's background work, owned by one cleanup context: the HTTP
session to the workers, the frame links over it, and the /health poll."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from .keys import CONFIG, LINKS, POOL, SESSION
from .links import WorkerLink


async def worker_connections(app: web.Application) -> AsyncIterator[None]:
    """Startup: the session and links, and a first health check so the ring
    is known before the first client. Cleanup (after on_shutdown and the
    handlers): the poll and any request still in flight end before the
    session closes."""
    config, pool = app[CONFIG], app[POOL]
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))
    links = {worker: WorkerLink(worker, session, config.forward_timeout, config.max_inflight_per_worker,
                                batch_gap=config.batch_gap_ms / 1000)
             for worker in config.workers}
    app[SESSION], app[LINKS] = session, links
    try:
        await pool.check(session, config.health_timeout)
        poll = asyncio.create_task(pool.poll(session, config.health_interval, config.health_timeout),
                                   name="balancer: /health poll")
        try:
            yield
        finally:
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll
            await asyncio.gather(*(link.close() for link in links.values()))
    finally:
        await session.close()
