"""With a token configured (here through AUTH_TOKEN), every REST call and
WebSocket connection must present it; /health stays open for monitoring."""
from __future__ import annotations

import asyncio
import io

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from cluster import make_system

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
    buf = io.BytesIO()
    sf.write(buf, samples[rate:rate + rate // 10], rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


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


def test_websockets_need_the_token(guarded, frame):
    base = f"ws://127.0.0.1:{guarded.balancer_port}"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/", "/ws"):
        assert asyncio.run(ws_status(base + path, frame=frame)) == 401
        assert asyncio.run(ws_status(base + path, {"Authorization": "Bearer wrong"}, frame)) == 401
        assert asyncio.run(ws_status(f"{base}{path}?token=wrong", frame=frame)) == 401
        assert asyncio.run(ws_status(base + path, {"Authorization": TOKEN}, frame)) == 401  # not a Bearer
        for reply in (asyncio.run(ws_status(base + path, bearer, frame)),
                      asyncio.run(ws_status(base + path, {"Authorization": f"bearer {TOKEN}"}, frame)),
                      asyncio.run(ws_status(f"{base}{path}?token={TOKEN}", frame=frame))):  # browsers
            assert isinstance(reply, dict) and "error" not in reply, reply
    assert len(guarded.account_log("authed")) == 6


def test_rest_calls_need_the_token(guarded):
    url, bearer = guarded.url, {"Authorization": f"Bearer {TOKEN}"}
    ingest = {"json": {"ACCOUNTCODE": "authed_http", "data": [0] * 800}}
    for method, path, kwargs in [("POST", "/", ingest), ("GET", "/", {}),
                                 ("GET", "/accounts/authed/speakers", {}),
                                 ("POST", "/accounts/authed/speakers/alice", {"data": b"RIFF"}),
                                 ("POST", "/embed", {"data": b"RIFF"}), ("POST", "/compare", {"json": {}})]:
        assert asyncio.run(http_status(method, url + path, **kwargs)) == 401, path
        assert asyncio.run(http_status(method, url + path, {"Authorization": "Bearer nope"}, **kwargs)) == 401
        assert asyncio.run(http_status(method, url + path, bearer, **kwargs)) != 401, path
        assert asyncio.run(http_status(method, f"{url}{path}?token={TOKEN}", **kwargs)) != 401, path
    assert asyncio.run(http_status("POST", url + "/", bearer, **ingest)) == 200
    assert asyncio.run(http_status("GET", url + "/health")) == 200  # open: load balancers and monitors poll it
    assert "rejected unauthenticated POST /accounts/authed/speakers/alice from 127.0.0.1" in guarded.balancer.output()


def test_workers_listen_on_loopback_only(guarded):
    from worker.config import WorkerConfig
    assert WorkerConfig().host == "127.0.0.1"
    import psutil
    pids = {p.pid for w in guarded.workers for p in [psutil.Process(w.popen.pid), *psutil.Process(w.popen.pid).children()]}
    listening = [c.laddr for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.pid in pids]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
