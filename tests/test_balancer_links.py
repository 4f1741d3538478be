"""WorkerLink's batching: a frame goes out at once on an idle link, frames
that wait leave together, and under load (--batch-gap-ms) requests to one
worker start no closer than the gap."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from balancer.links import NotSent, WorkerLink
from voicestream.batch import PATH, FrameMeta, InvalidFrame, decode_batch, encode_replies

GAP = 1.0  # seconds; long next to one local request, so the frames sent during it are known


class BatchRecorder:
    """A worker that answers every frame and records when each batch arrived
    and the seqs it held; clearing `gate` holds the answers."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[int]]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def frames(self, request: web.Request) -> web.Response:
        arrived = asyncio.get_running_loop().time()
        metas = [part[0] for part in decode_batch(await request.read()) if not isinstance(part, InvalidFrame)]
        self.batches.append((arrived, [meta.seq for meta in metas]))
        await self.gate.wait()
        replies = [{"voice": 0, "seq_seen": m.seq} for m in metas]
        return web.Response(text=encode_replies([200] * len(metas), replies), content_type="application/json")


@asynccontextmanager
async def link(batch_gap: float, timeout: float = 10.0) -> AsyncIterator[tuple[WorkerLink, BatchRecorder]]:
    recorder = BatchRecorder()
    app = web.Application()
    app.router.add_post(PATH, recorder.frames)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            worker_link = WorkerLink(f"http://127.0.0.1:{server.port}", session, timeout, batch_gap=batch_gap)
            try:
                yield worker_link, recorder
            finally:
                await worker_link.close()
    finally:
        await server.close()


def meta(seq: int) -> FrameMeta:
    return FrameMeta("acct", "stream", seq, seq)


async def until(condition) -> None:
    while not condition():  # the server records the batch when its request arrives
        await asyncio.sleep(0)


def test_waiting_frames_leave_together_and_the_next_request_keeps_the_gap():
    async def go() -> list[tuple[float, list[int]]]:
        async with link(GAP) as (worker, recorder):
            recorder.gate.clear()
            first = asyncio.create_task(worker.send(meta(1), b"w"))
            await until(lambda: len(recorder.batches) == 1)
            waiting = [asyncio.create_task(worker.send(meta(seq), b"w")) for seq in (2, 3)]
            await asyncio.sleep(0)
            recorder.gate.set()  # 1 answered; 2 and 3 had to wait: one request, and the gap starts
            assert (await first)[1]["seq_seen"] == 1
            assert [reply["seq_seen"] for _, reply in await asyncio.gather(*waiting)] == [2, 3]
            # Answered within the gap: the frames sent now wait for its end, together.
            later = [asyncio.create_task(worker.send(meta(seq), b"w")) for seq in (4, 5, 6)]
            assert [reply["seq_seen"] for _, reply in await asyncio.gather(*later)] == [4, 5, 6]
            return recorder.batches
    batches = asyncio.run(go())
    assert [seqs for _, seqs in batches] == [[1], [2, 3], [4, 5, 6]]
    assert batches[2][0] - batches[1][0] >= GAP  # a lower bound the link guarantees, not a measured speed


def test_a_quiet_link_sends_at_once():
    # After a one-frame request there is no gap, however long it is set:
    # these would wait forever otherwise.
    async def go() -> list[list[int]]:
        async with link(1000.0) as (worker, recorder):
            for seq in (1, 2, 3):
                await worker.send(meta(seq), b"w")
            return [seqs for _, seqs in recorder.batches]
    assert asyncio.run(go()) == [[1], [2], [3]]


def test_close_cancels_the_frames_waiting_for_the_gap():
    async def go() -> tuple[bool, int]:
        async with link(1000.0) as (worker, recorder):
            recorder.gate.clear()
            first = asyncio.create_task(worker.send(meta(1), b"w"))
            await until(lambda: len(recorder.batches) == 1)
            pair = [asyncio.create_task(worker.send(meta(seq), b"w")) for seq in (2, 3)]
            await asyncio.sleep(0)
            recorder.gate.set()
            await asyncio.gather(first, *pair)
            held = asyncio.create_task(worker.send(meta(4), b"w"))  # waits for the 1000 s gap
            await asyncio.sleep(0)
            await worker.close()
            await asyncio.gather(held, return_exceptions=True)
            return held.cancelled(), len(recorder.batches)
    assert asyncio.run(go()) == (True, 2)


def test_frames_waiting_behind_a_request_that_times_out_are_not_sent_to_that_worker():
    """The worker holds its first request past the link's timeout: that
    request's frame gets the timeout, and the frames that waited behind it
    fail at once with NotSent (to go to their next worker), rather than
    leave in a second request to the same worker and wait as long again."""
    async def go() -> tuple[BaseException | None, list[BaseException | None], list[list[int]], list[int]]:
        async with link(0.0, timeout=0.5) as (worker, recorder):
            recorder.gate.clear()
            stuck = asyncio.create_task(worker.send(meta(1), b"w"))
            await until(lambda: len(recorder.batches) == 1)
            waiting = [asyncio.create_task(worker.send(meta(seq), b"w")) for seq in (2, 3)]
            done = await asyncio.gather(stuck, *waiting, return_exceptions=True)
            recorder.gate.set()
            after = await worker.send(meta(4), b"w")  # the link goes on: the next frame is sent
            return (done[0] if isinstance(done[0], BaseException) else None,
                    [d if isinstance(d, BaseException) else None for d in done[1:]],
                    [seqs for _, seqs in recorder.batches], [after[1]["seq_seen"]])
    stuck, waiting, batches, after = asyncio.run(go())
    assert isinstance(stuck, TimeoutError)
    assert all(isinstance(w, NotSent) for w in waiting), waiting
    assert str(waiting[0]) == "not sent: the request ahead of it timed out"
    assert batches == [[1], [4]] and after == [4], "2 and 3 never reached the worker"


def test_release_waiting_fails_the_waiting_frames_and_leaves_the_request_in_flight():
    async def go() -> tuple[int, list[BaseException | None], list[list[int]]]:
        async with link(0.0) as (worker, recorder):
            recorder.gate.clear()
            in_flight = asyncio.create_task(worker.send(meta(1), b"w"))
            await until(lambda: len(recorder.batches) == 1)
            waiting = [asyncio.create_task(worker.send(meta(seq), b"w")) for seq in (2, 3)]
            await asyncio.sleep(0)
            worker.release_waiting("the worker left the ring")
            released = await asyncio.gather(*waiting, return_exceptions=True)
            recorder.gate.set()
            status, _ = await in_flight
            return status, [r if isinstance(r, BaseException) else None for r in released], \
                [seqs for _, seqs in recorder.batches]
    status, released, batches = asyncio.run(go())
    assert status == 200
    assert [str(r) for r in released] == ["not sent: the worker left the ring"] * 2
    assert batches == [[1]]
