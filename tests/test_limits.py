"""Limits and malformed packets through the real system (small limits, set by
flags): each gets a clear error, the connection stays usable, the server keeps
running. Limits set by environment variables: parse_args."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import struct

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from cluster import make_system

BALANCER_LIMITS = ["--max-message-bytes", "50000", "--max-upload-bytes", "100000", "--max-connections", "4",
                   "--max-account-length", "12", "--max-frame-seconds", "0.5"]
WORKER_LIMITS = ["--encoder", "none", "--max-frame-seconds", "0.5", "--accepted-rates", "8000,16000",
                 "--accepted-formats", "PCM_16,FLOAT", "--max-body-bytes", "200000"]


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    system = make_system(tmp_path_factory.mktemp("limits"), n_workers=1, worker_args=WORKER_LIMITS,
                         balancer_args=BALANCER_LIMITS)
    try:
        yield system.start()
    finally:
        system.stop()


@pytest.fixture(scope="module")
def speech16k(speech) -> np.ndarray:
    samples, rate = sf.read(speech("en_example.wav"), dtype="float32")
    assert rate == 16000
    return samples[16000:48000]


def wav(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


async def exchange(url: str, parts: list, replies: int) -> tuple[list[dict], aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for part in parts:
            await (ws.send_str(part) if isinstance(part, str) else ws.send_bytes(part))
        out = [await ws.receive_json(timeout=30) for _ in range(replies)]
        return out, ws


def test_ws_messages_over_the_size_limit(limited, speech16k):
    frame = wav(speech16k[:1600])

    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(limited.ws_url) as ws:
                for part in ["ACCOUNTCODE=big", b"\0" * 60000, "x" * 60000, "ACCOUNTCODE=big", frame]:
                    await (ws.send_str(part) if isinstance(part, str) else ws.send_bytes(part))
                replies = [await ws.receive_json(timeout=30) for _ in range(3)]
                await ws.send_bytes(b"\0" * 200001)  # over 4x the limit: aiohttp drops the connection
                closing = await ws.receive(timeout=30)
            async with session.ws_connect(limited.ws_url) as ws:  # the server keeps serving
                await ws.send_str("ACCOUNTCODE=big")
                await ws.send_bytes(frame)
                replies.append(await ws.receive_json(timeout=30))
            return replies, closing, ws
    (binary, text, ok, after), closing, _ = asyncio.run(go())
    assert binary == {"error": "message of 60000 bytes exceeds the limit of 50000 bytes", "account": "big", "seq": 1}
    assert text["error"] == "message of 60000 bytes exceeds the limit of 50000 bytes" and text["seq"] == 2
    assert "error" not in ok and ok["seq"] == 3
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert "error" not in after
    assert len(limited.account_log("big")) == 2


def test_http_bodies_over_the_limits_get_413(limited):
    async def go():
        async with aiohttp.ClientSession() as session:
            out = []
            for url, body in [(limited.url + "/", b"{" + b" " * 60000 + b"}"),
                              (limited.url + "/accounts/big/speakers/alice", b"\0" * 150000),
                              (limited.url + "/accounts/big/speakers/alice", b"\0" * 60000)]:
                async with session.post(url, data=body) as resp:
                    out.append((resp.status, await resp.json()))
            return out
    ingest, upload, upload_ok = asyncio.run(go())
    assert ingest[0] == 413 and "request body too large" in ingest[1]["error"]
    assert upload[0] == 413 and "request body too large" in upload[1]["error"]
    assert upload_ok[0] != 413  # REST uploads have their own, larger limit


def test_frame_duration_rates_formats_and_account_length(limited, speech16k):
    x = speech16k[:9600]  # 0.6 s
    stereo_44k = np.zeros((441, 2), np.float32)
    parts = ["ACCOUNTCODE=long", wav(x),
             "ACCOUNTCODE=rate", wav(stereo_44k, 44100),
             "ACCOUNTCODE=fmt", wav(x[:1600], subtype="PCM_24"),
             "ACCOUNTCODE=ulaw", wav(x[:800], 8000, subtype="ULAW"),
             "ACCOUNTCODE=abcdefghijklm",
             "ACCOUNTCODE=abcdefghijkl", wav(x[:1600])]
    replies, _ = asyncio.run(exchange(limited.ws_url, parts, 6))
    assert replies[0]["error"] == "audio too long: 0.60 s, limit 0.5 s"
    assert replies[1]["error"] == "sample rate 44100 Hz not accepted: use one of 8000, 16000"
    assert replies[2]["error"] == "unsupported WAV encoding PCM_24: send one of FLOAT, PCM_16"
    assert replies[3]["error"].startswith("unsupported WAV encoding ULAW")
    assert replies[4]["error"].startswith("invalid ACCOUNTCODE 'abcdefghijklm': use 1-12 characters")
    assert "error" not in replies[5] and replies[5]["account"] == "abcdefghijkl"
    assert [r["seq"] for r in replies] == [1, 2, 3, 4, 5, 6]

    async def ingest(samples: int) -> tuple[int, dict]:
        body = {"ACCOUNTCODE": "long", "data": [0] * samples, "sample_rate": 16000}
        async with aiohttp.ClientSession() as session, session.post(limited.url + "/", json=body) as resp:
            return resp.status, await resp.json()
    status, reply = asyncio.run(ingest(9600))
    assert status == 400 and reply["error"] == "'data' holds 0.60 s of audio, limit 0.5 s"
    assert asyncio.run(ingest(8000))[0] == 200


def test_connection_limit(limited, speech16k):
    frame = wav(speech16k[:1600])

    async def go():
        async with aiohttp.ClientSession() as session:
            sockets = [await session.ws_connect(limited.ws_url) for _ in range(4)]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(limited.ws_url)
            async with session.post(limited.url + "/", json={"ACCOUNTCODE": "x", "data": [0]}) as resp:
                ingest = resp.status, await resp.json()
            async with session.get(limited.url + "/health") as resp:
                health = resp.status, await resp.json()
            await sockets.pop().close()
            async with session.ws_connect(limited.ws_url) as ws:  # a slot is free again
                await ws.send_str("ACCOUNTCODE=slot")
                await ws.send_bytes(frame)
                reply = await ws.receive_json(timeout=30)
            for ws in sockets:
                await ws.close()
            return refused.value.status, ingest, health, reply
    refused, ingest, health, reply = asyncio.run(go())
    assert refused == 429
    assert ingest[0] == 429 and ingest[1]["error"] == "too many connections: the limit is 4, try again shortly"
    assert health[0] == 200 and health[1]["connections"] == 4
    assert "error" not in reply


def lie(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_malformed_packets_of_every_kind_name_the_problem(limited, speech16k):
    frame = wav(speech16k[:1600])
    nan = speech16k[:1600].copy()
    nan[100] = np.nan
    b64 = base64.b64encode(frame).decode()
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
        (["ACCOUNTCODE=m1", frame[:30]], "unreadable WAV"),
        (["ACCOUNTCODE=m1", lie(frame, 24, "<I", 1_000_003)], "sample rate 1000003 Hz not accepted"),
        (["ACCOUNTCODE=m1", lie(frame, 22, "<H", 1000)], "WAV header claims 1000 channels"),
        (["ACCOUNTCODE=m1", frame[:44]], "WAV holds no samples"),
        (["ACCOUNTCODE=m1", b""], "empty body"),
        (["ACCOUNTCODE=m1", b"hello, not a wav"], "not a WAV file"),
        (["ACCOUNTCODE=m1", wav(nan, subtype="FLOAT")], "NaN or infinite samples"),
        (["ACCOUNTCODE=m/../../x", frame], "invalid ACCOUNTCODE"),
    ]
    parts = [p for sent, _ in cases for p in sent] + ["ACCOUNTCODE=m1", frame,
                                                      json.dumps({"text": "ACCOUNTCODE=m1", "binary_data": b64})]
    # "ACCOUNTCODE=m/../../x" is refused on its own, then its frame is a binary part without a text part
    replies, _ = asyncio.run(exchange(limited.ws_url, parts, len(cases) + 3))
    for (sent, needle), reply in zip(cases, replies):
        assert needle in reply.get("error", ""), (sent[0][:60], reply)
    assert "binary part without a text part" in replies[len(cases)]["error"]
    good = replies[len(cases) + 1:]
    assert all("error" not in r for r in good), good
    assert [r["seq"] for r in replies] == list(range(1, len(replies) + 1))
    assert len(limited.account_log("m1")) == 2, "only the two good frames are logged"


def test_limits_from_environment_variables(monkeypatch):
    from balancer.config import parse_args as balancer_args
    from worker.config import parse_args as worker_args
    env = {"MAX_MESSAGE_BYTES": "1234", "MAX_UPLOAD_BYTES": "5678", "MAX_CONNECTIONS": "7",
           "MAX_ACCOUNT_LENGTH": "9", "MAX_FRAME_SECONDS": "0.25", "AUTH_TOKEN": "t", "FORWARD_TIMEOUT": "3",
           "HEALTH_TIMEOUT": "1.5", "ACCEPTED_RATES": "8000, 16000", "ACCEPTED_FORMATS": "pcm_16,float",
           "MAX_BODY_BYTES": "4321", "GRACEFUL_TIMEOUT": "4", "SHUTDOWN_TIMEOUT": "6"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    b = balancer_args([])
    assert (b.max_message_bytes, b.max_upload_bytes, b.max_connections, b.max_account_length,
            b.max_frame_seconds, b.token, b.forward_timeout, b.health_timeout, b.shutdown_timeout) == \
        (1234, 5678, 7, 9, 0.25, "t", 3.0, 1.5, 6.0)
    w = worker_args([])
    assert (w.max_frame_seconds, w.accepted_rates, w.accepted_formats, w.max_body_bytes, w.graceful_timeout) == \
        (0.25, (8000, 16000), ("PCM_16", "FLOAT"), 4321, 4.0)
    assert worker_args(["--accepted-rates", "44100"]).accepted_rates == (44100,)  # flags win
    with pytest.raises(SystemExit):
        worker_args(["--accepted-rates", "8k"])


def test_a_client_that_vanishes_before_its_reply(limited, speech16k):
    from cluster import wait_until
    frame = wav(speech16k[:1600])

    async def vanish():
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(limited.ws_url)
            await ws.send_str("ACCOUNTCODE=vanished")
            await ws.send_bytes(frame)
            ws._response.connection.transport.abort()  # gone without a close frame
    asyncio.run(vanish())
    wait_until(lambda: len(limited.account_log("vanished")) == 1, 30, "the frame to be logged")
    replies, _ = asyncio.run(exchange(limited.ws_url, ["ACCOUNTCODE=vanished", frame], 1))
    assert "error" not in replies[0]
    assert "Traceback" not in limited.balancer.output()


@pytest.mark.parametrize("path", ["/accounts/acme/%2e%2e/%2e%2e/frames", "/accounts/acme/../../frames",
                                  "/accounts/acme/speakers/%2E%2E%2F%2E%2E%2Fframes", "/accounts/acme/a//b"])
def test_rest_paths_cannot_leave_the_account(limited, path):
    # Forwarded as given, '..' segments were resolved by the HTTP client into
    # the worker's own /frames (or any other worker path).
    async def post() -> tuple[int, dict]:
        async with aiohttp.ClientSession() as session:
            async with session.post(aiohttp.client.URL(limited.url + path, encoded=True), data=b"") as resp:
                return resp.status, await resp.json()
    status, reply = asyncio.run(post())
    assert status == 400 and reply["error"].startswith("invalid path")
