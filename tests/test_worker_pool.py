"""WorkerPool health against real HTTP servers: in the ring once /health
answers 200; out at once when refused or not 200, after repeated timeouts
when merely slow; back when /health answers again."""
from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from balancer.routing import rank_workers
from balancer.workers import WorkerPool
from voicetools.cluster import free_port


async def serve(behaviour: dict, release: asyncio.Event) -> tuple[str, TestServer]:
    """A /health endpoint whose answer the test changes: status or 'hang'."""
    async def health(request: web.Request) -> web.Response:
        if behaviour["health"] == "hang":
            await release.wait()
        return web.json_response({}, status=behaviour["health"])
    app = web.Application()
    app.router.add_get("/health", health)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return f"http://127.0.0.1:{server.port}", server


def test_health_states():
    async def go():
        states = [{"health": 200}, {"health": 200}, {"health": 200}]
        release = asyncio.Event()
        servers = [await serve(s, release) for s in states]
        urls = [url for url, _ in servers]
        closed = f"http://127.0.0.1:{free_port()}"
        pool = WorkerPool((*urls, closed))
        assert pool.healthy() == []  # nobody is in the ring before answering
        async with aiohttp.ClientSession() as session:
            await pool.check(session, timeout=0.5)
            assert pool.healthy() == urls
            assert pool.ranked("1234") == rank_workers("1234", urls)

            states[0]["health"] = 503  # draining: out at once
            states[1]["health"] = "hang"  # slow: one timeout is not enough
            await pool.check(session, timeout=0.3)
            assert pool.healthy() == urls[1:]
            await pool.check(session, timeout=0.3)
            assert pool.healthy() == urls[2:]

            states[0]["health"] = states[1]["health"] = 200  # both recover
            await pool.check(session, timeout=0.5)
            assert pool.healthy() == urls
            assert pool.status() == {**{u: "up" for u in urls}, closed: "down"}

            pool.mark(urls[2], False, "forward failed")  # a failed forward takes it out...
            assert urls[2] not in pool.ranked("1234")
            await pool.check(session, timeout=0.5)  # ...until /health answers again
            assert pool.healthy() == urls
        release.set()
        for _, server in servers:
            await server.close()
    asyncio.run(go())


def test_joining_the_ring_is_news_leaving_it_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A worker that starts, or recovers, is the normal case: INFO. One that
    leaves the ring moves accounts and loses their streaming state: WARNING."""
    async def go() -> str:
        behaviour = {"health": 200}
        server_url, server = await serve(behaviour, asyncio.Event())
        pool = WorkerPool((server_url,))
        async with aiohttp.ClientSession() as session:
            await pool.check(session, timeout=1.0)  # joins
            behaviour["health"] = 503
            await pool.check(session, timeout=1.0)  # leaves
        await server.close()
        return server_url
    with caplog.at_level(logging.DEBUG, logger="balancer.workers"):
        url = asyncio.run(go())
    events = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "balancer.workers"]
    assert events == [("INFO", f"worker {url} is in the ring"),
                      ("WARNING", f"worker {url} left the ring: /health answered 503")]


def test_the_pool_keeps_what_each_worker_says_of_its_database():
    async def go():
        answers = [{"status": "ok", "database": {"mode": "postgresql", "state": "down", "spooled": 12}},
                   {"status": "ok"}]

        async def serve_json(answer: dict) -> tuple[str, TestServer]:
            async def health(request: web.Request) -> web.Response:
                return web.json_response(answer)
            app = web.Application()
            app.router.add_get("/health", health)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            return f"http://127.0.0.1:{server.port}", server

        servers = [await serve_json(a) for a in answers]
        urls = [url for url, _ in servers]
        pool = WorkerPool(tuple(urls))
        async with aiohttp.ClientSession() as session:
            await pool.check(session, timeout=1.0)
            assert pool.database_status() == {urls[0]: answers[0]["database"]}
            answers[0]["database"] = {"mode": "postgresql", "state": "up", "spooled": 0}
            await pool.check(session, timeout=1.0)
            assert pool.database_status() == {urls[0]: {"mode": "postgresql", "state": "up", "spooled": 0}}
        for _, server in servers:
            await server.close()
    asyncio.run(go())


def test_an_accounts_order_is_the_ranking_of_the_healthy_workers_whatever_leaves_the_ring():
    urls = tuple(f"http://127.0.0.1:{7001 + i}" for i in range(5))
    pool = WorkerPool(urls)
    accounts = [f"acct-{i}" for i in range(50)]
    for healthy in (urls, urls[1:], urls[::2], urls[:1], ()):
        for worker in urls:
            pool.mark(worker, worker in healthy)
        for account in accounts:  # the second time from the kept order
            assert pool.ranked(account) == pool.ranked(account) == rank_workers(account, healthy)
