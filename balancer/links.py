"""Frames on their way to one worker, sent together when they wait together.

A frame goes out at once while fewer than ``max_inflight`` requests to its
worker are open, so a lightly loaded system adds no delay. Frames that arrive
while the worker is busy wait and leave together in the next request: under
load a worker then parses one HTTP request per batch instead of per frame, and
runs the batch's VAD as one model call per chunk position.

Under load a link also keeps ``batch_gap`` seconds between the starts of two
requests: once a request carried more than one frame (frames had to wait),
the next leaves no sooner than ``batch_gap`` after it, so batches grow and
the per-request costs on both sides (HTTP, wake-ups, the model call) are
shared by more frames. A link whose last request carried one frame sends at
once again.

A frame waiting for its worker's request slot has not been sent: when the
request ahead of it times out (the worker is stuck, or far too slow) or the
worker leaves the ring, it fails with NotSent at once and goes to its next
worker, rather than waiting a whole --forward-timeout more behind another
request to the same worker. So a stall costs a frame one --forward-timeout
at most, not two.
"""
from __future__ import annotations

import asyncio
import json
from typing import cast

import aiohttp

from voicestream.batch import CONTENT_TYPE, MAX_FRAMES, PATH, FrameMeta, decode_replies, encode_batch
from voicestream.replies import FrameReply

# Statuses of a whole batch after which its frames go to the next worker,
# whatever the body (a proxy in front of a worker answers its own HTML page).
# 502, 503, 504 say "not here, not now": not processed. The same statuses of
# one frame inside a 200 mean the same for that frame (503: this worker
# cannot record it now). A frame's own 500 is its account's record failing on
# that worker's host: answered, not retried.
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})

Outcome = tuple[int, FrameReply]  # HTTP status for this frame, the worker's reply to it
Waiting = tuple[FrameMeta, bytes, asyncio.Future[Outcome]]


class BatchFailed(Exception):
    """A whole-batch 500. A worker answers its frames' own failures inside a
    200 (one status per frame), so this is a worker that failed mid-batch: it
    may have logged some frames, and the next worker may take them all the
    same, because a frame's stamp keeps its line to one and its (stream, seq)
    its row."""


class NotSent(Exception):
    """A frame that waited for its worker and was never sent to it: another
    worker may take it at once. The message says why, for the client."""


class WorkerLink:
    def __init__(self, url: str, session: aiohttp.ClientSession, timeout: float,
                 max_inflight: int = 1, max_batch_bytes: int = 512 * 1024, batch_gap: float = 0.0) -> None:
        self.url = f"{url}{PATH}"
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_inflight = max_inflight
        self.max_batch_bytes = max_batch_bytes
        self.batch_gap = batch_gap
        self.inflight = 0
        self._not_before = 0.0  # loop time before which no request starts (batch_gap)
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: list[Waiting] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def send(self, meta: FrameMeta, wav: bytes) -> Outcome:
        """This frame's outcome; raises what the request raised (refused,
        reset, timed out), or NotSent, so the caller can try the next worker."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((meta, wav, future))
        self._next()
        return await future

    async def close(self) -> None:
        """Cancels the frames waiting and the requests in flight, and waits
        for those requests to end: their session closes next."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for _, _, future in self._waiting:
            future.cancel()
        self._waiting.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def release_waiting(self, reason: str) -> None:
        """The frames waiting for a request go elsewhere, unsent (NotSent):
        their worker stalled or left the ring."""
        waiting, self._waiting = self._waiting, []
        for _, _, future in waiting:
            if not future.done():
                future.set_exception(NotSent(f"not sent: {reason}"))

    def _next(self) -> None:
        """Starts a request for the waiting frames now, or when the gap ends."""
        if self.inflight >= self.max_inflight or self._timer is not None or not self._waiting or self._closed:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._not_before:
            self._timer = loop.call_at(self._not_before, self._on_timer)
        else:
            self._start()

    def _on_timer(self) -> None:
        self._timer = None
        self._next()

    def _start(self) -> None:
        batch: list[Waiting] = []
        size = 0
        while self._waiting and len(batch) < MAX_FRAMES:
            meta, wav, future = self._waiting[0]
            if batch and size + len(wav) > self.max_batch_bytes:
                break
            self._waiting.pop(0)
            if not future.done():  # its client is gone
                batch.append((meta, wav, future))
                size += len(wav)
        if not batch:
            return
        if len(batch) > 1 and self.batch_gap > 0:
            self._not_before = asyncio.get_running_loop().time() + self.batch_gap
        self.inflight += 1
        task = asyncio.create_task(self._post(batch), name=f"balancer: frames to {self.url}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, batch: list[Waiting]) -> None:
        try:
            outcomes = await self._request(batch)
        except (aiohttp.ClientError, TimeoutError, ValueError, BatchFailed) as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, TimeoutError):
                # The frames behind it would wait as long again in the next
                # request to a worker that did not answer this one.
                self.release_waiting("the request ahead of it timed out")
        else:
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
        finally:
            for _, _, future in batch:  # cancelled (close): its frames get no outcome
                future.cancel()
            self.inflight -= 1
            self._next()

    async def _request(self, batch: list[Waiting]) -> list[Outcome]:
        body = encode_batch([(meta, wav) for meta, wav, _ in batch])
        async with self.session.post(self.url, data=body, headers={"Content-Type": CONTENT_TYPE},
                                     timeout=self.timeout) as resp:
            status, raw = resp.status, await resp.read()
        if status in UNAVAILABLE_STATUSES:  # not processed: the body does not matter
            return [(status, {})] * len(batch)
        if status == 500:
            raise BatchFailed(f"answered {status}")
        answer = json.loads(raw)  # ValueError: the caller reports an unreadable reply
        if status != 200:  # the whole request was refused (e.g. 413 for a body over the worker's limit)
            refused = cast(FrameReply, answer) if isinstance(answer, dict) else FrameReply()
            return [(status, refused)] * len(batch)
        return decode_replies(answer, len(batch))  # BatchError, a ValueError: unreadable too
