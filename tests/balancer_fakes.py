"""In-process stand-ins for the balancer's tests: workers that are aiohttp
servers on 127.0.0.1, and the balancer itself on aiohttp's test server.

The thing under test is the balancer, so the fake workers only speak its
side of the wire: /health, /frames/batch and /streams/close
(voicestream.batch) and the REST paths it proxies. What a real worker does with a frame is tested with the
real worker (the integration tests).
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from balancer.app import create_app
from balancer.config import BalancerConfig
from voicestream.batch import CLOSE_PATH, CONTENT_TYPE, PATH, InvalidFrame, decode_batch, decode_close, encode_replies
from voicetools.cluster import free_port


@dataclass(eq=False)
class FakeWorker:
    """A worker that answers every frame with a fixed analysis naming its port.

    Tests change its answers on the fly: `health` is /health's status;
    `frames_error` (status, content type, body) answers every batch instead;
    `refuse` is an error every frame gets (with `refuse_status` inside the
    batch's 200: 400 as for a bad WAV, 500 or 503 as for a record that
    cannot be written); clearing
    `gate` holds frames until it is set again. A close (/streams/close) is
    answered with the events `owed` holds for its (account, stream), given
    once; `close_status` answers every close instead.
    """
    health: int = 200
    frames_error: tuple[int, str, str] | None = None
    refuse: str | None = None
    refuse_status: int = 400
    rest_status: int = 200
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    frames: list[dict[str, Any]] = field(default_factory=list)  # batch metas received, in order, as sent
    owed: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    close_status: int | None = None
    closes: list[tuple[str, str]] = field(default_factory=list)  # (account, stream) of each close received
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)  # REST: method, path?query, body
    headers: list[dict[str, str]] = field(default_factory=list)  # REST: each request's headers
    server: TestServer | None = None
    port: int = 0  # known once started

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeWorker:
        self.gate.set()
        app = web.Application(client_max_size=64 << 20)
        app.router.add_get("/health", self._health)
        app.router.add_post(PATH, self._frames)
        app.router.add_post(CLOSE_PATH, self._close)
        app.router.add_route("*", "/{tail:.*}", self._rest)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        assert self.server.port is not None
        self.port = self.server.port
        return self

    async def close(self) -> None:
        self.gate.set()
        if self.server is not None:
            await self.server.close()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "port": self.port}, status=self.health)

    async def _frames(self, request: web.Request) -> web.Response:
        assert request.content_type == CONTENT_TYPE
        body = await request.read()
        await self.gate.wait()
        if self.frames_error is not None:
            status, content_type, text = self.frames_error
            return web.Response(status=status, content_type=content_type, text=text)
        statuses: list[int] = []
        replies: list[dict[str, Any]] = []
        for part in decode_batch(body):
            assert not isinstance(part, InvalidFrame), part  # the balancer sends only frames it checked
            meta, wav = part
            self.frames.append({"account": meta.account, "stream": meta.stream, "seq": meta.seq, "stamp": meta.stamp,
                                "size": len(wav)})
            if self.refuse is not None:
                statuses.append(self.refuse_status)
                replies.append({"error": self.refuse})
            else:
                statuses.append(200)
                # "bytes" is no reply field: it shows the tests which frame a reply answers.
                replies.append({"voice": 0, "prob": 0.0, "db": -90.0, "worker": self.port, "ms": 0.1,
                                "bytes": len(wav)})
        return web.Response(text=encode_replies(statuses, replies), content_type="application/json")

    async def _close(self, request: web.Request) -> web.Response:
        account, stream = decode_close(await request.read())
        self.closes.append((account, stream))
        if self.close_status is not None:
            return web.json_response({"error": "close refused"}, status=self.close_status)
        return web.json_response({"events": self.owed.pop((account, stream), [])})

    async def _rest(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((request.method, request.raw_path, body))
        self.headers.append(dict(request.headers))
        return web.json_response({"worker": self.port, "method": request.method, "path": request.raw_path,
                                  "bytes": len(body)}, status=self.rest_status)


@asynccontextmanager
async def fake_workers(n: int) -> AsyncIterator[list[FakeWorker]]:
    async with AsyncExitStack() as stack:
        workers = []
        for _ in range(n):
            worker = await FakeWorker().start()
            stack.push_async_callback(worker.close)
            workers.append(worker)
        yield workers


@asynccontextmanager
async def balancer(workers: Sequence[FakeWorker | str], **options: Any) -> AsyncIterator[TestClient]:
    """The balancer's app on a test server, started (first health check done);
    options are BalancerConfig's."""
    urls = tuple(w if isinstance(w, str) else w.url for w in workers)
    config = BalancerConfig(workers=urls, **options)
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server(shutdown_timeout=config.shutdown_timeout)  # as run_app in __main__
    client = TestClient(server)
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def closed_port_url() -> str:
    """A worker URL nothing listens on: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass(eq=False)
class DyingWorker:
    """A worker that answers /health, then dies in the middle of any other
    request: after reading it whole ("after-request"), or halfway through its
    answer's body ("mid-body"). A raw asyncio server, since an aiohttp one
    cannot be made to break its own protocol."""
    when: str = "after-request"
    requests: int = 0  # requests other than /health that reached it
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> DyingWorker:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            if request_line.startswith("GET /health "):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                             b"Connection: close\r\n\r\n{}")
                return
            self.requests += 1
            length = next((int(line.split(":", 1)[1]) for line in header_lines
                           if line.lower().startswith("content-length:")), 0)
            await reader.readexactly(length)
            if self.when == "mid-body":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
                             b"\r\n{\"speakers\": [")
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()


@asynccontextmanager
async def dying_worker(when: str) -> AsyncIterator[DyingWorker]:
    worker = await DyingWorker(when).start()
    try:
        yield worker
    finally:
        await worker.close()
