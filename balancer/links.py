"""Frames on their way to one worker, sent together when they wait together.

A frame goes out at once while fewer than ``max_inflight`` requests to its
worker are open, so a lightly loaded system adds no delay. Frames that arrive
while the worker is busy wait and leave together in the next request: under
load a worker then parses one HTTP request per batch instead of per frame, and
runs the batch's VAD as one model call per chunk position.
"""
from __future__ import annotations

import asyncio
import json

import aiohttp

from voicestream.batch import CONTENT_TYPE, MAX_FRAMES, FrameMeta, encode_batch

Outcome = tuple[int, dict]  # HTTP status for this frame, the worker's JSON for it


class WorkerLink:
    def __init__(self, url: str, session: aiohttp.ClientSession, timeout: float,
                 max_inflight: int = 1, max_batch_bytes: int = 512 * 1024) -> None:
        self.url = f"{url}/frames/batch"
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_inflight = max_inflight
        self.max_batch_bytes = max_batch_bytes
        self.inflight = 0
        self._waiting: list[tuple[FrameMeta, bytes, asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()

    async def send(self, meta: FrameMeta, wav: bytes) -> Outcome:
        """This frame's outcome; raises what the request raised (refused,
        reset, timed out) so the caller can try the next worker."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((meta, wav, future))
        if self.inflight < self.max_inflight:
            self._start()
        return await future

    def _start(self) -> None:
        batch, size = [], 0
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
        self.inflight += 1
        task = asyncio.create_task(self._post(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, batch: list[tuple[FrameMeta, bytes, asyncio.Future]]) -> None:
        try:
            outcomes = await self._request(batch)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, _, future), outcome in zip(batch, outcomes):
                if not future.done():
                    future.set_result(outcome)
        finally:
            self.inflight -= 1
            if self._waiting:
                self._start()

    async def _request(self, batch: list[tuple[FrameMeta, bytes, asyncio.Future]]) -> list[Outcome]:
        body = encode_batch([(meta, wav) for meta, wav, _ in batch])
        async with self.session.post(self.url, data=body, headers={"Content-Type": CONTENT_TYPE},
                                     timeout=self.timeout) as resp:
            status, raw = resp.status, await resp.read()
        answer = json.loads(raw)
        if status != 200:  # the whole request was refused (e.g. 503 while draining)
            return [(status, answer if isinstance(answer, dict) else {})] * len(batch)
        replies = answer.get("replies") if isinstance(answer, dict) else None
        if not isinstance(replies, list) or len(replies) != len(batch) or \
                not all(isinstance(reply, dict) for reply in replies):
            raise ValueError(f"worker gave no reply list for a batch of {len(batch)}")
        return [(reply.pop("status", 200), reply) for reply in replies]
