"""The load: N WebSocket streams at real-time pace, and the REST enrollment
that speaker mode needs before it streams."""
from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from voicestream.wav import FRAME_SECONDS

from . import BenchError
from .audio import Speaker, StreamSource, account_speakers
from .processes import ProcessWatch, Usage
from .stats import Criteria, LevelPlan, StreamRecord, summarize

TAIL_SECONDS = 0.5  # frames keep flowing past the window so its end is steady state
CONNECT_CONCURRENCY = 32
ENROLL_CONCURRENCY = 4
MAX_ERRORS_KEPT = 3  # per stream: the first error replies say enough


@dataclass(frozen=True)
class Target:
    http_url: str
    ws_url: str
    token: str = ""

    @classmethod
    def from_url(cls, url: str, token: str = "") -> Target:
        """http://host:port or ws://host:port[/ws] -> both forms."""
        url = url.rstrip("/")
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("http", "https", "ws", "wss"):
            raise BenchError(f"--url must start with http://, https://, ws:// or wss://, got {url!r}")
        host = rest.split("/", 1)[0]
        secure = scheme in ("https", "wss")
        return cls(f"{'https' if secure else 'http'}://{host}", f"{'wss' if secure else 'ws'}://{host}/ws", token)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def account_code(index: int) -> str:
    return f"bench{index:04d}"


async def send_frames(ws: aiohttp.ClientWebSocketResponse, header: str, source: StreamSource,
                      start: int, rec: StreamRecord) -> None:
    """Each frame at its due time, without waiting for replies (a live source does not wait)."""
    frames, count = source.frames, len(source.frames)
    for k, due in enumerate(rec.due.tolist()):
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        rec.sent[k] = time.monotonic()
        await ws.send_str(header)
        await ws.send_bytes(frames[(start + k) % count])


async def receive_replies(ws: aiohttp.ClientWebSocketResponse, rec: StreamRecord) -> None:
    """Every reply, matched to its frame by the balancer's per-connection seq."""
    expected, received = len(rec.due), 0
    while received < expected:
        msg = await ws.receive()
        now = time.monotonic()
        if msg.type != aiohttp.WSMsgType.TEXT:
            rec.errors.append(f"connection ended after {received} of {expected} replies ({msg.type.name})")
            return
        reply = json.loads(msg.data)
        seq = reply.get("seq")
        if not isinstance(seq, int) or not 1 <= seq <= expected or not math.isnan(rec.replied[seq - 1]):
            if len(rec.errors) < MAX_ERRORS_KEPT:
                rec.errors.append(f"reply with an unknown or repeated seq: {msg.data[:120]}")
            continue
        k = seq - 1
        rec.replied[k] = now
        received += 1
        if "error" in reply:
            rec.failed[k] = True
            if len(rec.errors) < MAX_ERRORS_KEPT:
                rec.errors.append(str(reply["error"])[:200])
        else:
            ms = reply.get("ms")
            rec.model_ms[k] = ms if isinstance(ms, (int, float)) else math.nan
            rec.workers[reply.get("worker")] += 1


async def connect_all(session: aiohttp.ClientSession, target: Target,
                      n: int) -> list[aiohttp.ClientWebSocketResponse | BaseException]:
    """n connections, at most CONNECT_CONCURRENCY handshakes at once; failures as exceptions."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect() -> aiohttp.ClientWebSocketResponse:
        async with gate:
            return await session.ws_connect(target.ws_url, headers=target.headers(), autoping=True)
    return await asyncio.gather(*(connect() for _ in range(n)), return_exceptions=True)


async def measure_window(watch: ProcessWatch | None, w0: float, w1: float) -> Usage | None:
    """Process and machine usage over [w0, w1) (monotonic), RSS sampled twice a second."""
    if watch is None:
        return None
    await asyncio.sleep(max(w0 - time.monotonic(), 0))
    watch.begin()
    while (left := w1 - time.monotonic()) > 0:
        await asyncio.sleep(min(0.5, left))
        watch.sample()
    return watch.end()


async def run_level(plan: LevelPlan, target: Target, sources: Sequence[StreamSource],
                    watch: ProcessWatch | None, criteria: Criteria) -> dict:
    """Stream plan.n accounts for warm-up + window + tail; the level's summary."""
    rng = random.Random(plan.seed * 100_003 + plan.n)
    n_frames = math.ceil((plan.warmup + plan.seconds + TAIL_SECONDS) / FRAME_SECONDS)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets = await connect_all(session, target, plan.n)
        connect_errors = [s for s in sockets if isinstance(s, BaseException)]
        t0 = time.monotonic() + 0.2
        w0, w1 = t0 + plan.warmup, t0 + plan.warmup + plan.seconds
        records, senders, receivers = [], [], []
        for i, ws in enumerate(sockets):
            if isinstance(ws, BaseException):
                continue
            source = sources[i % len(sources)]
            rec = StreamRecord.planned(account_code(i), t0, rng.uniform(0, FRAME_SECONDS), n_frames)
            records.append(rec)
            header = f"ACCOUNTCODE={rec.account}"
            start = rng.randrange(len(source.frames))
            senders.append(asyncio.create_task(send_frames(ws, header, source, start, rec)))
            receivers.append(asyncio.create_task(receive_replies(ws, rec)))
        measuring = asyncio.create_task(measure_window(watch, w0, w1))

        send_results = await asyncio.gather(*senders, return_exceptions=True)
        for rec, result in zip(records, send_results, strict=True):
            if isinstance(result, BaseException):
                rec.errors.append(f"send failed: {result.__class__.__name__}: {result}")
        if receivers:
            _, pending = await asyncio.wait(receivers, timeout=plan.drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*receivers, return_exceptions=True)
        usage = await measuring
        await asyncio.gather(*(ws.close() for ws in sockets if not isinstance(ws, BaseException)),
                             return_exceptions=True)
    return summarize(plan, records, connect_errors, w0, w1, usage, criteria)


async def enroll_accounts(target: Target, indices: Sequence[int], speakers: Sequence[Speaker],
                          ready_timeout: float = 180.0) -> None:
    """Two speakers per account through the REST API, before any streaming."""
    gate = asyncio.Semaphore(ENROLL_CONCURRENCY)
    async with aiohttp.ClientSession(headers=target.headers()) as session:
        async def enroll(index: int, speaker: Speaker) -> None:
            url = f"{target.http_url}/accounts/{account_code(index)}/speakers/{speaker.name}"
            deadline = time.monotonic() + ready_timeout
            while True:
                async with gate, session.post(url, data=speaker.enroll_wav,
                                              headers={"Content-Type": "audio/wav"}) as resp:
                    status, body = resp.status, await resp.text()
                # 503: the worker is up but its encoder is still loading.
                if status != 503 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            if status == 404:
                raise BenchError(
                    f"enrollment POST {url} answered 404 ({body.strip()[:200]}): this build has no speaker "
                    "REST API (worker/speakers is not in place yet); run --mode vad until it is")
            if status >= 300:
                raise BenchError(f"enrollment POST {url} answered {status}: {body.strip()[:300]}")
        await asyncio.gather(*(enroll(i, s) for i in indices for s in account_speakers(i, speakers)))
