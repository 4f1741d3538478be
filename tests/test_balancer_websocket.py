"""The WebSocket session in-process, against fake workers: the three packet
forms, one reply per packet in order, and every packet the balancer itself
refuses (form, account code, size, connection limit) with a clear error on a
connection that stays usable."""
from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from balancer_fakes import balancer, closed_port_url, fake_workers
from voicestream.stamps import stamp_text
from voicestream.wav import encode_wav

FRAME = encode_wav([0, 100, -100, 0] * 400, 16000)  # 0.1 s


async def exchange(client: TestClient, parts: list[str | bytes], replies: int, path: str = "/ws") -> list[Any]:
    async with client.ws_connect(path) as ws:
        for part in parts:
            await (ws.send_str(part) if isinstance(part, str) else ws.send_bytes(part))
        return [await ws.receive_json(timeout=10) for _ in range(replies)]


@pytest.mark.parametrize("path", ["/ws", "/"])
def test_the_three_packet_forms_reach_the_accounts_worker(path):
    parts: list[str | bytes] = [
        "ACCOUNTCODE=1234;lang=en", FRAME,
        json.dumps({"text": "ACCOUNTCODE=1234", "binary_data": base64.b64encode(FRAME).decode()}),
        str({"text": "ACCOUNTCODE=1234", "binary_data": FRAME}),  # the legacy Python literal
    ]

    async def go():
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            return await exchange(client, parts, 3, path), worker
    replies, worker = asyncio.run(go())
    assert [(m["account"], m["seq"], m["size"]) for m in worker.frames] == [("1234", i, len(FRAME)) for i in (1, 2, 3)]
    assert len({m["stream"] for m in worker.frames}) == 1  # one connection: one stream
    stamps = [m["stamp"] for m in worker.frames]
    assert stamps == sorted(set(stamps))
    assert replies == [{"account": "1234", "seq": m["seq"], "voice": 0, "prob": 0.0, "db": -90.0,
                        "worker": worker.port, "ms": 0.1, "bytes": len(FRAME), "time": stamp_text(m["stamp"])}
                       for m in worker.frames]


def test_packets_the_balancer_refuses_name_the_problem_and_the_connection_stays_usable():
    b64 = base64.b64encode(FRAME).decode()
    cases = [
        ([b"RIFF...."], "binary part without a text part"),
        (['{"text": "ACCOUNTCODE=m1", "binary_data": '], "neither JSON nor a Python dict literal"),
        (['{"text": "ACCOUNTCODE=m1", "binary_data": "not*base64"}'], "'binary_data' is not valid base64"),
        (['{"text": "ACCOUNTCODE=m1", "binary_data": 5}'], "'binary_data' as a base64 string"),
        (["{1, 2, 3}"], "must be an object"),
        (["{'text': 'ACCOUNTCODE=m1', 'binary_data': 'a str'}"], "'binary_data' as bytes"),
        (["{'text': 5, 'binary_data': b'RIFF'}"], "'text' as a string"),
        (["{'text': 'ACCOUNTCODE=m1', 'binary_data': b'', 'x': " + "[" * 30 + "]" * 30 + "}"], "nests too deeply"),
        (["{'text': 'ACCOUNTCODE=m1', 'binary_data': __import__('os').system('touch /tmp/pwned')}"],
         "neither JSON nor a Python dict literal"),
        (["ACCOUNTCODE=orphan"], "text part was not followed by a binary part"),  # the next text part orphans it
        (["ACCOUNTCODE=abcdefghijklm"], "invalid ACCOUNTCODE 'abcdefghijklm': use 1-12 characters"),
        (["ACCOUNTCODE=m/../../x", FRAME], "invalid ACCOUNTCODE"),
    ]
    parts = [p for sent, _ in cases for p in sent] + ["ACCOUNTCODE=m1", FRAME,
                                                      json.dumps({"text": "ACCOUNTCODE=m1", "binary_data": b64})]

    async def go():
        async with fake_workers(1) as (worker,), balancer([worker], max_account_length=12) as client:
            # "ACCOUNTCODE=m/../../x" is refused on its own, then its frame is a
            # binary part without a text part.
            return await exchange(client, parts, len(cases) + 3), worker
    replies, worker = asyncio.run(go())
    refused, frame_alone, good = replies[:len(cases)], replies[len(cases)], replies[len(cases) + 1:]
    for (sent, needle), reply in zip(cases, refused, strict=True):
        assert needle in reply["error"], (sent[0][:60], reply)
    assert refused[9]["account"] == "orphan"
    assert frame_alone["error"] == "binary part without a text part: send 'ACCOUNTCODE=...' first"
    assert all("error" not in r for r in good), good
    assert [r["seq"] for r in replies] == list(range(1, len(replies) + 1))
    assert [m["account"] for m in worker.frames] == ["m1", "m1"], "only the two good frames reach the worker"


def test_messages_over_the_size_limit():
    async def go():
        async with fake_workers(1) as (worker,), balancer([worker], max_message_bytes=50000) as client:
            async with client.ws_connect("/ws") as ws:
                for part in ["ACCOUNTCODE=big", b"\0" * 60000, "x" * 60000, "ACCOUNTCODE=big", FRAME]:
                    await (ws.send_str(part) if isinstance(part, str) else ws.send_bytes(part))
                replies = [await ws.receive_json(timeout=10) for _ in range(3)]
                await ws.send_bytes(b"\0" * 200001)  # over 4x the limit: aiohttp drops the connection
                closing = await ws.receive(timeout=10)
            replies += await exchange(client, ["ACCOUNTCODE=big", FRAME], 1)  # the server keeps serving
            return replies, closing, worker
    (binary, text, ok, after), closing, worker = asyncio.run(go())
    assert binary == {"error": "message of 60000 bytes exceeds the limit of 50000 bytes", "account": "big", "seq": 1}
    assert text == {"error": "message of 60000 bytes exceeds the limit of 50000 bytes", "seq": 2}
    assert "error" not in ok and ok["seq"] == 3
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert "error" not in after and after["seq"] == 1
    assert [m["account"] for m in worker.frames] == ["big", "big"]


def test_connection_limit():
    async def go():
        async with fake_workers(1) as (worker,), balancer([worker], max_connections=4) as client:
            sockets = [await client.ws_connect("/ws") for _ in range(4)]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect("/ws")
            async with client.post("/", json={"ACCOUNTCODE": "x", "data": [0]}) as resp:
                ingest = resp.status, await resp.json()
            async with client.get("/health") as resp:  # monitoring is never refused
                health = resp.status, await resp.json()
            await sockets.pop().close()
            reply = await exchange(client, ["ACCOUNTCODE=slot", FRAME], 1)  # a slot is free again
            for ws in sockets:
                await ws.close()
            return refused.value.status, ingest, health, reply[0]
    refused, ingest, health, reply = asyncio.run(go())
    assert refused == 429
    assert ingest == (429, {"error": "too many connections: the limit is 4, try again shortly"})
    assert health[0] == 200 and health[1]["connections"] == 4 and health[1]["clients"] == 4
    assert "error" not in reply


def test_a_frame_the_worker_refuses_gets_its_error_and_no_time():
    async def go():
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            worker.refuse = "unreadable WAV"
            return await exchange(client, ["ACCOUNTCODE=bad", FRAME], 1)
    assert asyncio.run(go()) == [{"account": "bad", "seq": 1, "error": "unreadable WAV"}]


def test_no_worker_up_is_an_error_reply_on_an_open_connection():
    async def go():
        async with balancer([closed_port_url()]) as client:
            return await exchange(client, ["ACCOUNTCODE=alone", FRAME] * 2, 2)
    no_worker = "no worker available: every worker is down, try again shortly"
    assert asyncio.run(go()) == [{"account": "alone", "seq": 1, "error": no_worker},
                                 {"account": "alone", "seq": 2, "error": no_worker}]
