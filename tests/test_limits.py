"""Limits and malformed frames through the real system (small limits, set by
flags): each gets a clear error, the connection stays usable, the server keeps
running. The limits the balancer alone enforces (message and body sizes,
connections, packet forms, REST paths) are tested in-process:
test_balancer_websocket.py, test_balancer_proxy.py."""
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

from voicestream.wav import encode_wav
from voicetools.cluster import make_system, wait_until

pytestmark = pytest.mark.integration

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


def wav(samples: np.ndarray, rate: int, subtype: str) -> bytes:
    """A WAV in an encoding other than PCM16 (that one: encode_wav)."""
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


async def exchange(url: str, parts: list, replies: int) -> tuple[list[dict], aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for part in parts:
            await (ws.send_str(part) if isinstance(part, str) else ws.send_bytes(part))
        out = [await ws.receive_json(timeout=30) for _ in range(replies)]
        return out, ws


def test_frame_duration_rates_formats_and_account_length(limited, speech16k):
    x = speech16k[:9600]  # 0.6 s
    stereo_44k = np.zeros((441, 2), np.float32)
    parts = ["ACCOUNTCODE=long", encode_wav(x, 16000),
             "ACCOUNTCODE=rate", wav(stereo_44k, 44100, "PCM_16"),
             "ACCOUNTCODE=fmt", wav(x[:1600], 16000, "PCM_24"),
             "ACCOUNTCODE=ulaw", wav(x[:800], 8000, "ULAW"),
             "ACCOUNTCODE=abcdefghijklm",
             "ACCOUNTCODE=abcdefghijkl", encode_wav(x[:1600], 16000)]
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


def lie(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_malformed_wavs_of_every_kind_name_the_problem(limited, speech16k):
    """What the worker refuses; what the balancer refuses (packet forms,
    account codes) is in test_balancer_websocket.py."""
    frame = encode_wav(speech16k[:1600], 16000)
    nan = speech16k[:1600].copy()
    nan[100] = np.nan
    b64 = base64.b64encode(frame).decode()
    cases = [
        (["ACCOUNTCODE=m1", frame[:30]], "unreadable WAV"),
        (["ACCOUNTCODE=m1", lie(frame, 24, "<I", 1_000_003)], "sample rate 1000003 Hz not accepted"),
        (["ACCOUNTCODE=m1", lie(frame, 22, "<H", 1000)], "WAV header claims 1000 channels"),
        (["ACCOUNTCODE=m1", frame[:44]], "WAV data chunk claims 3200 bytes but 0 are present"),
        (["ACCOUNTCODE=m1", frame[:44 + 1601]], "claims 3200 bytes but 1601 are present"),
        (["ACCOUNTCODE=m1", lie(frame[:44], 40, "<I", 0)], "WAV holds no samples"),  # unknown length: none there
        (["ACCOUNTCODE=m1", lie(frame, 40, "<I", 0xFFFFFFFF)[:44 + 1601]], "WAV data ends mid-sample"),
        (["ACCOUNTCODE=m1", b""], "empty body"),
        (["ACCOUNTCODE=m1", b"hello, not a wav"], "not a WAV file"),
        (["ACCOUNTCODE=m1", wav(nan, 16000, "FLOAT")], "NaN or infinite samples"),
    ]
    parts = [p for sent, _ in cases for p in sent] + ["ACCOUNTCODE=m1", frame,
                                                      json.dumps({"text": "ACCOUNTCODE=m1", "binary_data": b64})]
    replies, _ = asyncio.run(exchange(limited.ws_url, parts, len(cases) + 2))
    for (sent, needle), reply in zip(cases, replies, strict=False):
        assert needle in reply.get("error", ""), (sent[1][:60], reply)
        assert reply["account"] == "m1"
    good = replies[len(cases):]
    assert all("error" not in r for r in good), good
    assert [r["seq"] for r in replies] == list(range(1, len(replies) + 1))
    assert len(limited.account_log("m1")) == 2, "only the two good frames are logged"


def test_a_client_that_vanishes_before_its_reply(limited, speech16k):
    frame = encode_wav(speech16k[:1600], 16000)

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
