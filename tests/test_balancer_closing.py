"""A stream's close in-process, against fake workers (balancer/closing.py,
session.py, http_streams.py): CLOSE answers one StreamClosed per account with
the events its workers owed, then 1000; a close goes to every worker the
stream's frames reached, and one that fails is said; a client gone without
CLOSE, an idle HTTP stream and a shutdown close their streams all the same.
HTTP ingest gives an account one stream, its frames one at a time. With a
real balancer and worker: test_conversation_events.py."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from balancer.closing import StreamWorkers
from balancer.keys import HTTP_STREAMS
from balancer.routing import rank_workers
from balancer_fakes import FakeWorker, balancer, fake_workers
from voicestream.wav import encode_wav

FRAME = encode_wav([0, 100, -100, 0] * 400, 16000)  # 0.1 s
INGEST = {"ACCOUNTCODE": "1691", "data": [0] * 900, "sample_rate": 8000}


def segment(start: int, end: int, speaker: str = "alice") -> dict[str, Any]:
    """A segment event as a worker sends it (what the fakes owe)."""
    return {"type": "segment", "speaker": speaker, "score": 0.8, "start": "2023-01-20 13:44:44.123435",
            "end": "2023-01-20 13:44:45.123435", "start_seq": start, "end_seq": end, "frames": end - start + 1,
            "final": True}


def by_rank(workers: list[FakeWorker], account: str) -> list[FakeWorker]:
    order = rank_workers(account, [w.url for w in workers])
    return [next(w for w in workers if w.url == url) for url in order]


async def until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never {what}"
        await asyncio.sleep(0.01)


async def send_frame(ws: aiohttp.ClientWebSocketResponse, account: str) -> dict[str, Any]:
    await ws.send_str(f"ACCOUNTCODE={account}")
    await ws.send_bytes(FRAME)
    reply: dict[str, Any] = await ws.receive_json(timeout=10)
    assert "error" not in reply, reply
    return reply


async def until_closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[Any], aiohttp.WSMessage]:
    """The messages before the close, and the close."""
    messages = []
    while (msg := await ws.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
        messages.append(msg.json())
    return messages, msg


# --- CLOSE on a WebSocket ---


def test_close_without_frames_ends_the_connection_with_no_message():
    async def go() -> tuple[list[Any], aiohttp.WSMessage, FakeWorker]:
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            async with client.ws_connect("/ws") as ws:
                await ws.send_str("CLOSE")
                return *(await until_closed(ws)), worker
    messages, closing, worker = asyncio.run(go())
    assert messages == [] and worker.closes == []
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.OK


def test_close_answers_each_accounts_events_in_the_order_of_their_last_frames_then_closes():
    async def go() -> tuple[list[Any], aiohttp.WSMessage, list[FakeWorker], str]:
        async with fake_workers(2) as workers, balancer(workers) as client:
            # Two accounts whose first choices differ: each close goes to its own worker.
            one = next(f"a{i}" for i in range(100) if by_rank(workers, f"a{i}")[0] is workers[0])
            two = next(f"b{i}" for i in range(100) if by_rank(workers, f"b{i}")[0] is workers[1])
            async with client.ws_connect("/ws") as ws:
                await send_frame(ws, one)
                await send_frame(ws, two)
                await send_frame(ws, one)
                stream = workers[0].frames[0]["stream"]
                workers[0].owed[one, stream] = [segment(1, 3)]
                workers[1].owed[two, stream] = [segment(2, 2, "bob"), segment(4, 5)]
                await ws.send_str("CLOSE")
                return *(await until_closed(ws)), workers, stream
    messages, closing, (first, second), stream = asyncio.run(go())
    one, two = first.frames[0]["account"], second.frames[0]["account"]
    assert messages == [{"account": two, "closed": True, "events": [segment(2, 2, "bob"), segment(4, 5)]},
                        {"account": one, "closed": True, "events": [segment(1, 3)]}]
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.OK
    assert first.closes == [(one, stream)] and second.closes == [(two, stream)]  # once each, nobody else asked


def test_after_a_failover_the_close_reaches_both_workers_the_earlier_first():
    async def go() -> tuple[list[Any], list[FakeWorker], str]:
        async with fake_workers(2) as workers, balancer(workers) as client:
            first, second = by_rank(workers, "moved")
            async with client.ws_connect("/ws") as ws:
                assert (await send_frame(ws, "moved"))["worker"] == first.port
                first.frames_error = (503, "application/json", '{"error": "worker is shutting down"}')
                assert (await send_frame(ws, "moved"))["worker"] == second.port
                stream = first.frames[0]["stream"]
                first.owed["moved", stream] = [segment(1, 1)]
                second.owed["moved", stream] = [segment(2, 2)]
                await ws.send_str("CLOSE")
                messages, _ = await until_closed(ws)
            return messages, [first, second], stream
    messages, (first, second), stream = asyncio.run(go())
    assert messages == [{"account": "moved", "closed": True, "events": [segment(1, 1), segment(2, 2)]}]
    assert first.closes == second.closes == [("moved", stream)]


def test_a_close_a_worker_fails_says_so_with_the_events_of_the_others():
    async def go() -> list[Any]:
        async with fake_workers(2) as workers, balancer(workers) as client:
            first, second = by_rank(workers, "acct")
            async with client.ws_connect("/ws") as ws:
                await send_frame(ws, "acct")
                first.frames_error = (503, "application/json", '{"error": "worker is shutting down"}')
                await send_frame(ws, "acct")
                second.owed["acct", second.frames[0]["stream"]] = [segment(2, 2)]
                first.close_status = 500
                await ws.send_str("CLOSE")
                messages, _ = await until_closed(ws)
            return messages
    assert asyncio.run(go()) == [{
        "account": "acct", "closed": True, "events": [segment(2, 2)],
        "error": "the close did not reach 1 of the 2 workers that took frames of this stream (answered 500): "
                 "final labels pending there will not come"}]


def test_a_client_gone_without_close_has_its_stream_closed_all_the_same():
    async def go() -> tuple[FakeWorker, str]:
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            async with client.ws_connect("/ws") as ws:
                await send_frame(ws, "gone")
            stream = worker.frames[0]["stream"]
            await until(lambda: worker.closes == [("gone", stream)], "the stream's close")
            return worker, stream
    asyncio.run(go())


def test_shutdown_closes_the_streams_of_its_connections():
    async def go() -> tuple[aiohttp.WSMessage, FakeWorker]:
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            async with aiohttp.ClientSession() as session, session.ws_connect(client.make_url("/ws")) as ws:
                await send_frame(ws, "drain")
                await client.server.close()
                return await ws.receive(timeout=10), worker
    closing, worker = asyncio.run(go())
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.GOING_AWAY
    assert worker.closes == [("drain", worker.frames[0]["stream"])]  # done before the cleanup closed the session


# --- HTTP ingest's streams ---


async def post(client: TestClient, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with client.post("/", json=body) as resp:
        return resp.status, await resp.json()


def test_an_accounts_http_frames_are_one_stream_the_balancer_counts():
    async def go() -> tuple[list[tuple[int, dict[str, Any]]], FakeWorker]:
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            answers = [await post(client, {**INGEST, "seq": 41}), await post(client, {**INGEST, "seq": 42}),
                       await post(client, {**INGEST, "ACCOUNTCODE": "77"}), await post(client, INGEST)]
            return answers, worker
    answers, worker = asyncio.run(go())
    assert [(status, reply["account"], reply["seq"]) for status, reply in answers] == \
        [(200, "1691", 41), (200, "1691", 42), (200, "77", 1), (200, "1691", 1)]
    streams = [meta["stream"] for meta in worker.frames]
    assert streams[0] == streams[1] == streams[3] != streams[2] and streams[0].startswith("http-")
    assert [meta["seq"] for meta in worker.frames] == [1, 2, 1, 3]


def test_an_accounts_http_frames_go_to_its_worker_one_at_a_time():
    async def go() -> tuple[int, list[tuple[int, dict[str, Any]]], FakeWorker]:
        async with fake_workers(1) as (worker,), balancer([worker], max_inflight_per_worker=4) as client:
            worker.gate.clear()
            posts = [asyncio.create_task(post(client, INGEST)) for _ in range(3)]
            streams = client.server.app[HTTP_STREAMS]
            await until(lambda: (stream := streams.get("1691")) is not None and stream.users == 3,
                        "the three requests at the balancer")
            async with client.get("/health") as resp:
                in_flight = (await resp.json())["frames_in_flight"]
            worker.gate.set()
            return in_flight, list(await asyncio.gather(*posts)), worker
    in_flight, answers, worker = asyncio.run(go())
    assert in_flight == 1  # the others wait in the balancer, not at the worker
    assert [status for status, _ in answers] == [200] * 3
    assert [meta["seq"] for meta in worker.frames] == [1, 2, 3]


def test_an_idle_http_stream_is_closed_and_the_next_frame_starts_another():
    async def go() -> tuple[FakeWorker, list[str]]:
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            client.server.app[HTTP_STREAMS].idle_seconds = 0.1  # instead of 5 s
            await post(client, INGEST)
            await post(client, INGEST)
            first = worker.frames[0]["stream"]
            await until(lambda: worker.closes == [("1691", first)], "the idle stream's close")
            await post(client, INGEST)
            return worker, [meta["stream"] for meta in worker.frames]
    worker, streams = asyncio.run(go())
    assert streams[0] == streams[1] != streams[2]
    assert [meta["seq"] for meta in worker.frames] == [1, 2, 1]


def test_shutdown_closes_the_http_streams():
    async def go() -> FakeWorker:
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            await post(client, INGEST)
            await post(client, {**INGEST, "ACCOUNTCODE": "77"})
            await client.server.close()
            return worker
    worker = asyncio.run(go())
    assert sorted(worker.closes) == sorted((meta["account"], meta["stream"]) for meta in worker.frames)


def test_a_streams_accounts_are_kept_in_the_order_of_their_last_frame_and_bounded():
    workers = StreamWorkers(max_accounts=3)
    workers.reached("a", ["w1"])
    workers.reached("b", ["w1"])
    workers.reached("a", ["w2", "w1"])  # a failed over to w2, then back to w1
    workers.reached("c", [])  # no worker reached: nothing to close there
    workers.reached("d", ["w2"])  # a fourth account: the one whose last frame is oldest goes
    assert workers.take() == [("a", ("w2", "w1")), ("c", ()), ("d", ("w2",))]
    assert workers.take() == []  # taken once
