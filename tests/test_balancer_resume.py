"""A client that names its stream and numbers its frames, in process against
fake workers: what the workers are sent (the client's stream as c:<name>, its
seq), what the client gets back, and every way of getting it wrong. That a
worker answers a resent frame as a duplicate is tested on the real worker
(test_worker_app.py) and end to end (test_resume.py)."""
from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from balancer_fakes import FakeWorker, balancer, fake_workers
from voicestream.batch import decode_batch, encode_replies
from voicestream.stamps import stamp_text
from voicestream.wav import encode_wav

FRAME = encode_wav([0, 100, -100, 0] * 400, 16000)  # 0.1 s
B64 = base64.b64encode(FRAME).decode()


async def exchange(client: TestClient, parts: list[str | bytes], replies: int) -> list[Any]:
    async with client.ws_connect("/ws") as ws:
        for part in parts:
            await (ws.send_str(part) if isinstance(part, str) else ws.send_bytes(part))
        return [await ws.receive_json(timeout=10) for _ in range(replies)]


def test_numbered_frames_reach_the_worker_as_the_clients_stream_and_seq():
    parts: list[str | bytes] = [
        "ACCOUNTCODE=1234;stream=call-7;seq=41", FRAME,
        json.dumps({"text": "ACCOUNTCODE=1234;stream=call-7;seq=42", "binary_data": B64}),
        str({"text": "ACCOUNTCODE=1234; stream = call-7 ; seq=43;lang=en", "binary_data": FRAME}),
        "CLOSE",
    ]

    async def go() -> tuple[list[Any], FakeWorker]:
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            return await exchange(client, parts, 4), worker
    replies, worker = asyncio.run(go())
    assert [(m["stream"], m["seq"]) for m in worker.frames] == [("c:call-7", 41), ("c:call-7", 42), ("c:call-7", 43)]
    assert [(r["account"], r["seq"]) for r in replies[:3]] == [("1234", 41), ("1234", 42), ("1234", 43)]
    assert [r["time"] for r in replies[:3]] == [stamp_text(m["stamp"]) for m in worker.frames]
    assert replies[3] == {"account": "1234", "closed": True, "events": []}
    assert worker.closes == [("1234", "c:call-7")]


def test_a_frame_sent_again_on_a_new_connection_is_the_same_frame_to_the_worker():
    """Reconnected, the client sends again the frame it had no reply to: the
    worker is sent the same (stream, seq), with a stamp of its own."""
    async def go() -> list[dict[str, Any]]:
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            await exchange(client, ["ACCOUNTCODE=1234;stream=call-7;seq=1", FRAME], 1)
            await exchange(client, ["ACCOUNTCODE=1234;stream=call-7;seq=1", FRAME,
                                    "ACCOUNTCODE=1234;stream=call-7;seq=2", FRAME], 2)
            return worker.frames
    first, again, second = asyncio.run(go())
    assert (first["stream"], first["seq"]) == (again["stream"], again["seq"]) == ("c:call-7", 1)
    assert again["stamp"] > first["stamp"] and second["seq"] == 2


@dataclass(eq=False)
class RememberingWorker(FakeWorker):
    """Answers a (stream, seq) it saw before as a real worker does: its first
    reply marked duplicate, with the time of its first stamp."""

    def __post_init__(self) -> None:
        self.seen: dict[tuple[str, int], dict[str, Any]] = {}

    async def _frames(self, request: web.Request) -> web.Response:
        replies = []
        for part in decode_batch(await request.read()):
            assert isinstance(part, tuple)
            meta, _ = part
            assert meta.seq is not None and meta.stamp is not None
            key = (meta.stream, meta.seq)
            if key in self.seen:
                replies.append({**self.seen[key], "duplicate": True})
            else:
                self.seen[key] = {"voice": 1, "worker": self.port, "time": stamp_text(meta.stamp)}
                replies.append({"voice": 1, "worker": self.port})
        return web.Response(text=encode_replies([200] * len(replies), replies), content_type="application/json")


def test_a_duplicate_keeps_the_time_of_its_first_attempt():
    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        worker = await RememberingWorker().start()
        try:
            async with balancer([worker]) as client:
                [first] = await exchange(client, ["ACCOUNTCODE=1234;stream=s;seq=1", FRAME], 1)
                [again] = await exchange(client, ["ACCOUNTCODE=1234;stream=s;seq=1", FRAME], 1)
                return first, again
        finally:
            await worker.close()
    first, again = asyncio.run(go())
    assert again == {**first, "duplicate": True}, "its line's time, not the resend's stamp"


@pytest.mark.parametrize(("text", "error"), [
    ("ACCOUNTCODE=1234;stream=call-7", "stream=call-7 needs seq=<n>: the frame's number in its stream, from 1"),
    ("ACCOUNTCODE=1234;stream=a b;seq=1", "invalid stream 'a b': use 1-64 characters of A-Z a-z 0-9 _ -"),
    ("ACCOUNTCODE=1234;stream=;seq=1", "invalid stream '': use 1-64 characters"),
    ("ACCOUNTCODE=1234;stream=" + "s" * 65 + ";seq=1", "invalid stream 'sss"),
    ("ACCOUNTCODE=1234;stream=c:x;seq=1", "invalid stream 'c:x'"),
    ("ACCOUNTCODE=1234;stream=s;seq=0", "invalid seq 0: a frame's number in its stream is a whole number from 1 to "
                                        "999999999999999999"),
    ("ACCOUNTCODE=1234;stream=s;seq=-3", "invalid seq '-3'"),
    ("ACCOUNTCODE=1234;stream=s;seq=1.5", "invalid seq '1.5'"),
    ("ACCOUNTCODE=1234;stream=s;seq=" + "9" * 18 + "0", "invalid seq 9999999999999999990"),
    ("ACCOUNTCODE=1234;stream=s;seq=١", "invalid seq '١'"),  # a digit, but not an ASCII one
])
def test_a_bad_stream_or_seq_is_refused_naming_it(text, error):
    async def go() -> tuple[list[Any], FakeWorker]:
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            return await exchange(client, [text, FRAME, json.dumps({"text": text, "binary_data": B64}),
                                           "ACCOUNTCODE=1234", FRAME], 4), worker
    (refused, frame_alone, refused_json, ok), worker = asyncio.run(go())
    assert refused["error"].startswith(error) and refused_json["error"] == refused["error"]
    assert frame_alone["error"].startswith("binary part without a text part")
    assert "error" not in ok, "the connection stays usable"
    assert len(worker.frames) == 1


def test_a_seq_without_a_stream_is_the_clients_own_field_as_before():
    async def go() -> tuple[list[Any], FakeWorker]:
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            return await exchange(client, ["ACCOUNTCODE=1234;seq=500", FRAME], 1), worker
    [reply], worker = asyncio.run(go())
    assert reply["seq"] == 1 and worker.frames[0]["seq"] == 1 and not worker.frames[0]["stream"].startswith("c:")


def test_a_connection_carries_one_stream():
    numbered, other = "ACCOUNTCODE=1234;stream=call-7;seq=1", "ACCOUNTCODE=1234;stream=call-8;seq=1"

    async def go() -> tuple[list[Any], list[Any], FakeWorker]:
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            named = await exchange(client, [numbered, FRAME, other, FRAME, "ACCOUNTCODE=1234", FRAME, b"RIFF",
                                            "ACCOUNTCODE=1234;stream=call-7;seq=2", FRAME], 5)
            plain = await exchange(client, ["ACCOUNTCODE=1234", FRAME, numbered, FRAME], 2)
            return named, plain, worker
    named, plain, worker = asyncio.run(go())
    assert named[0]["seq"] == 1 and "error" not in named[0]
    assert named[1] == {"account": "1234", "seq": 1, "error": "this connection streams 'call-7', and a connection "
                                                              "carries one stream: send stream 'call-8' on another "
                                                              "connection"}
    # Its count of packets means nothing to a client that numbers its frames: no seq.
    assert named[2] == {"account": "1234", "error": "this connection streams 'call-7': every frame needs "
                                                    "stream=call-7;seq=<n>"}
    assert named[3] == {"error": "binary part without a text part: send 'ACCOUNTCODE=...' first"}
    assert named[4]["seq"] == 2 and "error" not in named[4]
    assert "error" not in plain[0] and plain[0]["seq"] == 1
    assert plain[1]["seq"] == 1 and plain[1]["error"].startswith("this connection's frames are not numbered")
    assert [m["seq"] for m in worker.frames] == [1, 2, 1]


def test_http_ingest_takes_the_clients_stream_and_seq():
    body = {"ACCOUNTCODE": "1691", "data": [0, 12, -40] * 100, "sample_rate": 8000}

    async def go() -> tuple[list[tuple[int, Any]], FakeWorker]:
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            answers = []
            for extra in ({"stream": "call-7", "seq": 9}, {"stream": "call-7", "seq": 10}, {"seq": 4}, {},
                          {"stream": "call-7"}, {"stream": "call-7", "seq": True}, {"stream": "call-7", "seq": "3"},
                          {"stream": "call-7", "seq": 2.0}, {"stream": 7, "seq": 1}, {"stream": "x y", "seq": 1}):
                async with client.post("/", json={**body, **extra}) as resp:
                    answers.append((resp.status, await resp.json()))
            return answers, worker
    answers, worker = asyncio.run(go())
    assert [(status, reply["seq"]) for status, reply in answers[:4]] == [(200, 9), (200, 10), (200, 4), (200, 1)]
    assert [(m["stream"][:2], m["seq"]) for m in worker.frames] == [("c:", 9), ("c:", 10), ("ht", 1), ("ht", 2)]
    assert worker.frames[0]["stream"] == "c:call-7"
    assert answers[4:] == [
        (400, {"error": "'stream' needs 'seq': the frame's number in its stream, from 1"}),
        (400, {"error": "invalid seq True: a frame's number in its stream is a whole number from 1 to "
                        "999999999999999999"}),
        (400, {"error": "invalid seq '3': a frame's number in its stream is a whole number from 1 to "
                        "999999999999999999"}),
        (400, {"error": "invalid seq 2.0: a frame's number in its stream is a whole number from 1 to "
                        "999999999999999999"}),
        (400, {"error": "invalid stream int: use 1-64 characters of A-Z a-z 0-9 _ -"}),
        (400, {"error": "invalid stream 'x y': use 1-64 characters of A-Z a-z 0-9 _ -"}),
    ]
