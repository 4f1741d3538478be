"""Slow and idle clients. In process: what the frame headers of a client's
bytes say (balancer/slow_clients.py MessageBoundaries) and the per-address
cap. With a real balancer and a real worker: clients on raw sockets that
trickle a message byte by byte, or send nothing, are closed (4008, 4000)
while a client streaming beside them is served, and the slots they held
serve new clients."""
from __future__ import annotations

import asyncio
import json
import urllib.request

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from balancer.slow_clients import MessageBoundaries
from balancer_fakes import balancer, fake_workers
from raw_websocket import BINARY, CLOSE, PING, TEXT, RawWebSocket, frame
from voicestream.wav import encode_wav
from voicetools.cluster import System, make_system, wait_until

FRAME = encode_wav([0, 100, -100, 0] * 400, 16000)  # 0.1 s


def fed(boundaries: MessageBoundaries, data: bytes, at: float, step: float = 0.0) -> list[float | None]:
    """Feeds data one byte at a time (step apart), or whole (step 0); what
    boundaries.started said after each piece."""
    if not step:
        boundaries.feed(data, at)
        return [boundaries.started]
    seen: list[float | None] = []
    for i in range(len(data)):
        boundaries.feed(data[i:i + 1], at + i * step)
        seen.append(boundaries.started)
    return seen


def test_a_whole_message_leaves_nothing_under_way():
    b = MessageBoundaries()
    assert b.started is None
    assert fed(b, frame(TEXT, b"ACCOUNTCODE=1234") + frame(BINARY, FRAME), 1.0) == [None]


def test_a_trickled_message_is_under_way_from_its_first_byte_to_its_last():
    b = MessageBoundaries()
    data = frame(TEXT, b"ACCOUNTCODE=1234")
    seen = fed(b, data, 10.0, step=1.0)
    assert seen[:-1] == [10.0] * (len(data) - 1) and seen[-1] is None
    # The next message's first byte, in the same chunk as the end of one.
    assert fed(b, frame(TEXT, b"x") + frame(BINARY, FRAME)[:3], 50.0) == [50.0]


def test_long_lengths_and_fragments_with_a_ping_between_them():
    b = MessageBoundaries()
    for payload in (b"a" * 300, b"b" * 70_000):  # 16-bit and 64-bit lengths
        data = frame(BINARY, payload)
        assert fed(b, data[:5], 1.0) == [1.0]
        assert fed(b, data[5:-1], 2.0) == [1.0]
        assert fed(b, data[-1:], 3.0) == [None]
    first, ping, last = frame(TEXT, b"ACCOUNT", final=False), frame(PING, b"hi"), frame(0x0, b"CODE=1", final=True)
    assert fed(b, first, 5.0) == [5.0]
    assert fed(b, ping, 6.0) == [5.0], "a ping inside a fragmented message does not end it"
    assert fed(b, last, 7.0) == [None]
    assert fed(b, ping[:3], 8.0) == [8.0] and fed(b, ping[3:], 9.0) == [None], "nor a ping alone last for ever"
    assert fed(b, frame(CLOSE, b"\x03\xe8"), 10.0) == [None]


def test_however_the_bytes_are_cut_a_message_ends_where_its_last_frame_does():
    """Messages of every header size and a fragmented one with a ping inside,
    fed in chunks of 1 to 40 bytes: nothing is under way exactly at the ends
    of whole messages (and of the ping between them)."""
    parts = [frame(TEXT, b"ACCOUNTCODE=1234;stream=s;seq=1"), frame(BINARY, FRAME), frame(PING, b""),
             frame(BINARY, b"x" * 70_000), frame(TEXT, b"a", final=False), frame(PING, b"p"),
             frame(0x0, b"b", final=False), frame(0x0, b"c"), frame(TEXT, b"")]
    data = b"".join(parts)
    ends, at = set(), 0
    for i, part in enumerate(parts):
        at += len(part)
        if i not in (4, 5, 6):  # inside the fragmented message
            ends.add(at)
    for size in (*range(1, 41), 4096):
        b = MessageBoundaries()
        idle_at = set()
        for start in range(0, len(data), size):
            b.feed(data[start:start + size], float(start))
            if b.started is None:
                idle_at.add(min(start + size, len(data)))
        chunk_ends = {min(start + size, len(data)) for start in range(0, len(data), size)}
        assert idle_at == chunk_ends & ends, size


def test_a_connection_cap_per_address():
    async def go() -> tuple[int, dict, int]:
        async with fake_workers(1) as (worker,), balancer([worker], max_connections_per_address=2) as client:
            sockets = [await client.ws_connect("/ws") for _ in range(2)]
            async with client.post("/", json={"ACCOUNTCODE": "x", "data": [0] * 800}) as resp:
                refused = resp.status, await resp.json()
            await sockets.pop().close()
            async with client.post("/", json={"ACCOUNTCODE": "x", "data": [0] * 800}) as resp:
                served = resp.status
            for ws in sockets:
                await ws.close()
            return refused[0], refused[1], served
    status, body, served = asyncio.run(go())
    assert (status, body) == (429, {"error": "too many connections from your address: the limit is 2"})
    assert served == 200


# --- a real balancer and worker ---------------------------------------------

MESSAGE_TIMEOUT, IDLE_TIMEOUT = 2.0, 4.0
SLOW = 20


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory):
    """One VAD worker and a balancer with short limits; its connections
    limited to the slow clients plus one."""
    system = make_system(tmp_path_factory.mktemp("slow"), n_workers=1, worker_args=["--encoder", "none"],
                         balancer_args=["--max-connections", str(SLOW + 1), "--message-timeout", str(MESSAGE_TIMEOUT),
                                        "--idle-timeout", str(IDLE_TIMEOUT)])
    try:
        yield system.start()
    finally:
        system.stop()


def closed_for(system: System, reason: str) -> float:
    """The balancer's count of WebSockets it closed for reason (/metrics)."""
    with urllib.request.urlopen(f"{system.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return next(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                if sample.name == "voicestream_balancer_rejected_total" and sample.labels == {"reason": reason})


def clients(system: System) -> int:
    with urllib.request.urlopen(f"{system.url}/health", timeout=5) as resp:
        return json.load(resp)["clients"]


async def trickle(ws: RawWebSocket, data: bytes, every: float) -> None:
    """Sends data a byte every `every` seconds, until the server closes."""
    try:
        for i in range(len(data)):
            await ws.send(data[i:i + 1])
            await asyncio.sleep(every)
    except ConnectionError:
        pass


async def stream(url: str, account: str, stop: asyncio.Event) -> list[dict]:
    """A client at real-time pace until stop; its replies."""
    replies = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        while not stop.is_set():
            await ws.send_str(f"ACCOUNTCODE={account}")
            await ws.send_bytes(FRAME)
            replies.append(await ws.receive_json(timeout=30))
            await asyncio.sleep(0.1)
        await ws.send_str("CLOSE")
    return replies


@pytest.mark.integration
def test_slow_clients_are_closed_while_another_is_served(system):
    """Twenty clients trickle a byte of a text message every 0.5 s; with one
    client streaming they fill --max-connections (21): another is refused.
    Each slow one is closed with 4008 when its message is 2 s old, and the
    streaming client is served all along; then new clients are served."""
    port = system.balancer_port
    before = closed_for(system, "message_timeout")

    async def go() -> tuple[list[dict], int, list[tuple[int, str]], list[dict]]:
        stop = asyncio.Event()
        streaming = asyncio.create_task(stream(system.ws_url, "steady", stop))
        await asyncio.to_thread(wait_until, lambda: clients(system) == 1, 30, "the streaming client")
        slow = []
        for _ in range(SLOW):
            status, ws = await RawWebSocket.connect("127.0.0.1", port)
            assert status == 101
            slow.append(ws)
        trickling = [asyncio.create_task(trickle(ws, frame(TEXT, b"ACCOUNTCODE=slow"), 0.5)) for ws in slow]
        refused, extra = await RawWebSocket.connect("127.0.0.1", port)  # every slot is taken
        await extra.close()
        closes = []
        for ws in slow:
            close = await asyncio.wait_for(ws.receive(), 30)
            assert close.opcode == CLOSE
            closes.append((close.close_code, close.close_reason))
            await ws.close()
        for task in trickling:
            task.cancel()
        await asyncio.to_thread(wait_until, lambda: clients(system) == 1, 30, "the slow clients' slots to free")
        stop.set()
        replies = await streaming
        after = await stream_one(system.ws_url)
        return replies, refused, closes, after

    replies, refused, closes, after = asyncio.run(go())
    assert refused == 429
    assert closes == [(4008, f"message incomplete after {MESSAGE_TIMEOUT:g} s")] * SLOW
    assert closed_for(system, "message_timeout") - before == SLOW
    assert replies and all("error" not in r for r in replies), "served while they were closed"
    assert [r["seq"] for r in replies] == list(range(1, len(replies) + 1))
    assert "error" not in after[0]
    assert len(system.account_log("steady")) == len(replies) and not system.account_log("slow")


async def stream_one(url: str) -> list[dict]:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str("ACCOUNTCODE=after")
        await ws.send_bytes(FRAME)
        return [await ws.receive_json(timeout=30)]


@pytest.mark.integration
def test_an_idle_client_and_a_text_part_without_its_binary_part_are_closed(system):

    async def go() -> tuple[tuple[int, str], tuple[int, str], dict, tuple[int, str | None]]:
        _, idle = await RawWebSocket.connect("127.0.0.1", system.balancer_port)
        _, waiting = await RawWebSocket.connect("127.0.0.1", system.balancer_port)
        await waiting.send(frame(TEXT, b"ACCOUNTCODE=halfway"))  # and never its binary part
        closed = []
        for ws in (idle, waiting):
            close = await asyncio.wait_for(ws.receive(), 30)
            closed.append((close.close_code, close.close_reason))
            await ws.close()
        # aiohttp's own client: pauses shorter than the idle timeout keep it open.
        async with aiohttp.ClientSession() as session, session.ws_connect(system.ws_url) as ws:
            for _ in range(2):
                await ws.send_str("ACCOUNTCODE=pauses")
                await ws.send_bytes(FRAME)
                reply = await ws.receive_json(timeout=30)
                await asyncio.sleep(IDLE_TIMEOUT / 2)
            end = await ws.receive(timeout=30)  # nothing more sent: idle
            return closed[0], closed[1], reply, (end.data, end.extra)
    idle, waiting, reply, end = asyncio.run(go())
    assert idle == (4000, f"idle for {IDLE_TIMEOUT:g} s")
    assert waiting == (4008, f"message incomplete after {MESSAGE_TIMEOUT:g} s")
    assert "error" not in reply
    assert end == (4000, f"idle for {IDLE_TIMEOUT:g} s")
    assert len(system.account_log("pauses")) == 2 and not system.account_log("halfway")
