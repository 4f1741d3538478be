"""The balancer's start and stop in-process: shutdown closes idle WebSockets
at once and busy ones after their reply (1001 both), and the cleanup leaves
no background task and no open session behind. The same through SIGTERM and
real processes: test_shutdown.py."""
from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp.test_utils import TestClient

from balancer.keys import SESSION
from balancer_fakes import balancer, fake_workers
from voicestream.wav import encode_wav

FRAME = encode_wav([0] * 1600, 16000)


async def until_in_flight(client: TestClient, frames: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        async with client.get("/health") as resp:
            if (await resp.json())["frames_in_flight"] == frames:
                return
        assert time.monotonic() < deadline, f"never {frames} frames in flight"
        await asyncio.sleep(0.01)


def balancer_tasks() -> list[str]:
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("balancer"))


def test_shutdown_closes_idle_websockets_at_once_and_busy_ones_after_their_reply():
    async def go():
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            async with aiohttp.ClientSession() as session:
                url = client.make_url("/ws")
                busy, idle = await session.ws_connect(url), await session.ws_connect(url)
                worker.gate.clear()  # the frame waits at the worker
                await busy.send_str("ACCOUNTCODE=drain")
                await busy.send_bytes(FRAME)
                await until_in_flight(client, 1)
                stopping = asyncio.create_task(client.server.close())
                idle_close = await idle.receive(timeout=10)  # idle connections close at once...
                busy_open = not busy.closed
                worker.gate.set()
                reply = await busy.receive_json(timeout=10)  # ...a busy one answers its frame...
                busy_close = await busy.receive(timeout=10)  # ...then closes
                await stopping
                await idle.close()
                await busy.close()
                return idle_close, busy_open, reply, busy_close, worker
    idle_close, busy_open, reply, busy_close, worker = asyncio.run(go())
    assert idle_close.type == aiohttp.WSMsgType.CLOSE and idle_close.data == aiohttp.WSCloseCode.GOING_AWAY
    assert idle_close.extra == "server shutting down"
    assert busy_open
    assert "error" not in reply and reply["seq"] == 1
    assert busy_close.type == aiohttp.WSMsgType.CLOSE and busy_close.data == aiohttp.WSCloseCode.GOING_AWAY
    assert [m["account"] for m in worker.frames] == ["drain"]


def test_cleanup_ends_the_health_poll_and_the_requests_in_flight_then_closes_the_session():
    # The frame is still at the worker when shutdown_timeout ends its handler:
    # the cleanup must cancel the request, not leave it running on a closed session.
    async def go():
        async with fake_workers(1) as (worker,), \
                balancer([worker], forward_timeout=60, shutdown_timeout=0.2) as client:
            worker.gate.clear()
            async with aiohttp.ClientSession() as session, session.ws_connect(client.make_url("/ws")) as ws:
                await ws.send_str("ACCOUNTCODE=stuck")
                await ws.send_bytes(FRAME)
                await until_in_flight(client, 1)
                running = balancer_tasks()
                await client.server.close()
                left = balancer_tasks()
                closed = client.server.app[SESSION].closed
                last = await ws.receive(timeout=10)
            return running, left, closed, last, worker
    running, left, closed, last, worker = asyncio.run(go())
    assert running == ["balancer: /health poll", f"balancer: frames to {worker.url}/frames/batch",
                       "balancer: idle HTTP streams"]
    assert left == [] and closed
    assert last.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)  # the connection ended, no reply
