"""With a token configured through AUTH_TOKEN, the real system refuses what
lacks it and serves what has it; workers listen on loopback only. Every
path and form of the token: test_balancer_http.py (in-process)."""
from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
import soundfile as sf

from voicestream.wav import encode_wav
from voicetools.cluster import make_system

pytestmark = pytest.mark.integration

TOKEN = "s3cret-t0ken"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    system = make_system(tmp_path_factory.mktemp("auth"), n_workers=1, worker_args=["--encoder", "none"],
                         env={"AUTH_TOKEN": TOKEN})
    try:
        yield system.start()
    finally:
        system.stop()


@pytest.fixture(scope="module")
def frame(speech) -> bytes:
    samples, rate = sf.read(speech("sample2.wav"), dtype="int16")
    return encode_wav(samples[rate:rate + rate // 10], rate)


async def ws_status(url: str, headers: dict | None = None, frame: bytes | None = None) -> int | dict:
    """401/... for a refused handshake, else the reply to one frame."""
    async with aiohttp.ClientSession(headers=headers) as session:
        try:
            async with session.ws_connect(url) as ws:
                await ws.send_str("ACCOUNTCODE=authed")
                await ws.send_bytes(frame)
                return await ws.receive_json(timeout=30)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def http_status(method: str, url: str, headers: dict | None = None, **kwargs) -> int:
    async with aiohttp.ClientSession(headers=headers) as session, session.request(method, url, **kwargs) as resp:
        body = await resp.json()
        if resp.status == 401:
            assert body["error"].startswith("missing or wrong token")
        return resp.status


def test_the_token_from_the_environment_guards_the_system(guarded, frame):
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert asyncio.run(ws_status(guarded.ws_url, frame=frame)) == 401
    assert asyncio.run(ws_status(guarded.ws_url, {"Authorization": "Bearer wrong"}, frame)) == 401
    for reply in (asyncio.run(ws_status(guarded.ws_url, bearer, frame)),
                  asyncio.run(ws_status(f"{guarded.ws_url}?token={TOKEN}", frame=frame))):
        assert isinstance(reply, dict) and "error" not in reply, reply
    assert len(guarded.account_log("authed")) == 2
    ingest = {"json": {"ACCOUNTCODE": "authed_http", "data": [0] * 800}}
    assert asyncio.run(http_status("POST", guarded.url + "/", **ingest)) == 401
    assert asyncio.run(http_status("POST", guarded.url + "/", bearer, **ingest)) == 200
    assert asyncio.run(http_status("GET", guarded.url + "/health")) == 200  # open: monitors poll it
    assert "rejected unauthenticated POST / from 127.0.0.1" in guarded.balancer.output()


def raw_request(url: str, header: bytes) -> tuple[int, bytes]:
    """One GET with a header of raw bytes (no client library sends bytes that
    are not UTF-8); the status and the body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(b"GET /accounts/x/speakers HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + header +
                     b"\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("header", [b"Authorization: Bearer \xff\xfe", b"Authorization: Bearer \xed\xa0\x80",
                                    b"Authorization: \xff Bearer"])
def test_a_token_that_is_not_utf8_is_refused_not_an_error(guarded, header):
    status, body = raw_request(guarded.url, header)
    assert status == 401 and b"missing or wrong token" in body, body


def test_workers_listen_on_loopback_only(guarded):
    from worker.config import WorkerConfig
    assert WorkerConfig().host == "127.0.0.1"
    import psutil
    pids = {p.pid for w in guarded.workers
            for p in [psutil.Process(w.popen.pid), *psutil.Process(w.popen.pid).children()]}
    listening = [c.laddr for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.pid in pids]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
