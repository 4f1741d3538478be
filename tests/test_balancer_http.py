"""The balancer's HTTP side in-process, against fake workers: HTTP ingest,
the root and /health, JSON errors for everything, and the token."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from balancer_fakes import balancer, closed_port_url, fake_workers
from voicestream.stamps import stamp_text

TOKEN = "s3cret-t0ken"
INGEST = {"ACCOUNTCODE": "1691", "data": [0, 10, -10] * 300, "sample_rate": 8000}


async def call(client: TestClient, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with client.request(method, path, **kwargs) as resp:
        return resp.status, await resp.json()


def test_ingest_forwards_one_frame_and_answers_its_reply():
    async def go():
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            return await call(client, "POST", "/", json={**INGEST, "seq": 41}), worker
    (status, reply), worker = asyncio.run(go())
    (meta,) = worker.frames
    # The worker's seq counts the account's HTTP stream (test_balancer_closing.py); the reply's is the client's.
    assert (meta["account"], meta["seq"], meta["stream"][:5]) == ("1691", 1, "http-")
    assert meta["size"] == 44 + 2 * 900  # the samples as a PCM16 WAV
    assert status == 200
    assert reply == {"account": "1691", "seq": 41, "voice": 0, "prob": 0.0, "db": -90.0, "worker": worker.port,
                     "ms": 0.1, "bytes": meta["size"], "time": stamp_text(meta["stamp"])}


def test_ingest_errors():
    async def go():
        async with fake_workers(1) as (worker,), balancer([worker], max_frame_seconds=0.5) as client:
            malformed = await call(client, "POST", "/", data=b"not json")
            too_long = await call(client, "POST", "/", json={**INGEST, "data": [0] * 4001})
            worker.refuse = "sample rate 8000 Hz not accepted: use one of 16000"
            refused = await call(client, "POST", "/", json=INGEST)
            return malformed, too_long, refused, worker
    malformed, too_long, refused, worker = asyncio.run(go())
    assert malformed == (400, {"error": 'body must be JSON: {"ACCOUNTCODE": ..., "data": [int16 samples], '
                                        '"sample_rate": 8000}'})
    assert too_long == (400, {"error": "'data' holds 0.50 s of audio, limit 0.5 s"})
    assert refused == (400, {"account": "1691", "seq": 1,
                             "error": "sample rate 8000 Hz not accepted: use one of 16000"})
    assert len(worker.frames) == 1  # only the well-formed frame was sent


def test_ingest_with_no_worker_up_is_503():
    async def go():
        async with balancer([closed_port_url()]) as client:
            return await call(client, "POST", "/", json=INGEST)
    assert asyncio.run(go()) == (503, {"account": "1691", "seq": 1,
                                       "error": "no worker available: every worker is down, try again shortly"})


def test_root_health_and_errors_are_json():
    async def go():
        async with fake_workers(1) as (worker,), balancer([worker, closed_port_url()]) as client:
            info = await call(client, "GET", "/")
            async with client.get("/", headers={"Accept": "text/html"}) as resp:
                page = resp.status, resp.content_type, await resp.text()
            async with client.get("/console.js") as resp:  # the page's script
                script = await resp.text()
            health = await call(client, "GET", "/health")
            not_found = await call(client, "GET", "/nowhere")
            not_allowed = await call(client, "PUT", "/")
            get_embed = await call(client, "GET", "/embed")
            return info, page, script, health, not_found, not_allowed, get_embed, worker
    info, page, script, health, not_found, not_allowed, get_embed, worker = asyncio.run(go())
    workers = health[1]["workers"]
    assert info == (200, {"service": "voice stream balancer", "websocket": "/ws", "workers": workers})
    assert page[:2] == (200, "text/html") and 'src="console.js"' in page[2]  # the browser client
    assert "new WebSocket(" in script
    assert list(workers.values()) == ["up", "down"] and next(iter(workers)) == worker.url
    assert health == (200, {"status": "ok", "workers": workers, "connections": 0, "clients": 0,
                            "frames_in_flight": 0, "database": {},
                            "event_loop": "asyncio"})  # the test's own loop
    assert not_found == (404, {"error": "Not Found"})
    assert not_allowed == (405, {"error": "Method Not Allowed"})
    assert get_embed == (405, {"error": "Method Not Allowed"})


def test_health_is_503_when_no_worker_is_up():
    async def go():
        async with balancer([closed_port_url()]) as client:
            return await call(client, "GET", "/health")
    status, health = asyncio.run(go())
    assert status == 503 and health["status"] == "degraded"


async def ws_reply(client: TestClient, path: str, headers: dict[str, str] | None = None) -> int | dict:
    """The status of a refused handshake, else the reply to one frame."""
    try:
        async with client.ws_connect(path, headers=headers) as ws:
            await ws.send_str('{"text": "ACCOUNTCODE=authed", "binary_data": "UklGRg=="}')
            return await ws.receive_json(timeout=10)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


def test_websockets_need_the_token():
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    async def go():
        async with fake_workers(1) as (worker,), balancer([worker], token=TOKEN) as client:
            out = []
            for path in ("/", "/ws"):
                out.append([await ws_reply(client, path), await ws_reply(client, path, {"Authorization": "Bearer no"}),
                            await ws_reply(client, f"{path}?token=wrong"),
                            await ws_reply(client, path, {"Authorization": TOKEN})])  # not a Bearer
                out.append([await ws_reply(client, path, bearer),
                            await ws_reply(client, path, {"Authorization": f"bearer {TOKEN}"}),
                            await ws_reply(client, f"{path}?token={TOKEN}")])  # browsers cannot set headers
            return out, worker
    (refused_root, accepted_root, refused_ws, accepted_ws), worker = asyncio.run(go())
    assert refused_root == refused_ws == [401] * 4
    for reply in accepted_root + accepted_ws:
        assert isinstance(reply, dict) and "error" not in reply, reply
    assert len(worker.frames) == 6


REST_CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/", {"json": INGEST}), ("GET", "/", {}), ("GET", "/accounts/authed/speakers", {}),
    ("POST", "/accounts/authed/speakers/alice", {"data": b"RIFF"}), ("POST", "/embed", {"data": b"RIFF"}),
    ("POST", "/compare", {"json": {}}),
]


@pytest.mark.parametrize("method, path, kwargs", REST_CALLS)
def test_rest_calls_need_the_token(method, path, kwargs, caplog):
    async def go():
        async with fake_workers(1) as (worker,), balancer([worker], token=TOKEN) as client:
            return [await call(client, method, path, **kwargs),
                    await call(client, method, path, headers={"Authorization": "Bearer nope"}, **kwargs),
                    await call(client, method, f"{path}?token=nope", **kwargs),
                    await call(client, method, path, headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs),
                    await call(client, method, f"{path}?token={TOKEN}", **kwargs),
                    await call(client, "GET", "/health")]  # open: load balancers and monitors poll it
    with caplog.at_level(logging.WARNING, logger="balancer"):
        *refused, bearer, query, health = asyncio.run(go())
    assert refused == [(401, {"error": "missing or wrong token: send 'Authorization: Bearer <token>' or "
                                       "?token=<token>"})] * 3
    assert bearer[0] == query[0] == health[0] == 200
    assert f"rejected unauthenticated {method} {path} from 127.0.0.1" in caplog.text
