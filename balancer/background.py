"""The balancer's background work, owned by one cleanup context: the HTTP
session to the workers (sending the worker secret), the frame links over it,
the /health poll, and the closes nobody waits for (closing.py) with the sweep
of idle HTTP streams."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from voicestream.worker_secret import authorization

from .closing import Closer
from .http_streams import close_streams, sweep
from .keys import CLOSER, CONFIG, HTTP_STREAMS, LINKS, POOL, SESSION, TRAFFIC
from .links import WorkerLink


async def worker_connections(app: web.Application) -> AsyncIterator[None]:
    """Startup: the session and links, and a first health check so the ring
    is known before the first client. Cleanup (after on_shutdown and the
    handlers): the poll and the sweep end; every HTTP stream is closed, and
    the closes under way get what is left of --shutdown-timeout; then any
    request still in flight ends before the session closes."""
    config, pool = app[CONFIG], app[POOL]
    # Every request to a worker carries the worker secret: frames, closes,
    # the REST proxy (which forwards no client header of that name) and /health.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                                    headers=authorization(config.worker_secret))
    links = {worker: WorkerLink(worker, session, config.forward_timeout, config.max_inflight_per_worker,
                                batch_gap=config.batch_gap_ms / 1000)
             for worker in config.workers}
    closer = Closer(session, config.forward_timeout)
    app[SESSION], app[LINKS], app[CLOSER] = session, links, closer

    def left_the_ring(worker: str) -> None:
        links[worker].release_waiting("the worker left the ring")
    pool.on_exit.append(left_the_ring)
    try:
        await pool.check(session, config.health_timeout)
        tasks = [asyncio.create_task(pool.poll(session, config.health_interval, config.health_timeout),
                                     name="balancer: /health poll"),
                 asyncio.create_task(sweep(app[HTTP_STREAMS], closer), name="balancer: idle HTTP streams")]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            close_streams(closer, app[HTTP_STREAMS].take_all())
            stopped_at = app[TRAFFIC].stopped_at
            await closer.finish((stopped_at if stopped_at is not None else time.monotonic())
                                + config.shutdown_timeout)
            await asyncio.gather(*(link.close() for link in links.values()))
    finally:
        pool.on_exit.remove(left_the_ring)
        await session.close()
