"""forward_frame and WorkerLink against in-process fake workers: which
answers mean "try the next worker", what the client is told, and which
workers the frame may have reached (its stream's close goes there)."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from balancer.forward import forward_frame
from balancer.keys import LINKS, TRAFFIC
from balancer.links import WorkerLink
from balancer.packets import Header, Packet
from balancer.routing import rank_workers
from balancer.workers import WorkerPool
from balancer_fakes import FakeWorker, balancer, closed_port_url, fake_workers
from voicestream.stamps import stamp_text
from voicestream.wav import encode_wav

FRAME = encode_wav([0] * 800, 8000)
PACKET = Packet(Header("acct"), FRAME)
STAMP = 1_700_000_000_000_000


async def forward(workers: list[FakeWorker], timeout: float = 5.0) -> tuple[dict, WorkerPool]:
    pool = WorkerPool(tuple(w.url for w in workers))
    async with aiohttp.ClientSession() as session:
        await pool.check(session)
        links = {w.url: WorkerLink(w.url, session, timeout) for w in workers}
        reply = await forward_frame(pool, links, PACKET, "stream", 7, STAMP, timeout)
    return reply, pool


def by_rank(workers: list[FakeWorker], account: str) -> list[FakeWorker]:
    """The workers in the order the account tries them."""
    order = rank_workers(account, [w.url for w in workers])
    return [next(w for w in workers if w.url == url) for url in order]


PROXY_ERROR_PAGE = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_retry_status_with_a_non_json_body_goes_to_the_next_worker(status):
    # A proxy or load balancer in front of a worker answers its own HTML
    # error page: the frame was not processed there, so the next choice takes it.
    async def go() -> tuple[dict, WorkerPool, FakeWorker, FakeWorker]:
        async with fake_workers(2) as workers:
            first, second = by_rank(workers, "acct")
            first.frames_error = (status, "text/html", PROXY_ERROR_PAGE)
            reply, pool = await forward(workers)
            return reply, pool, first, second
    reply, pool, first, second = asyncio.run(go())
    assert reply == {"account": "acct", "seq": 7, "voice": 0, "prob": 0.0, "db": -90.0, "worker": second.port,
                     "ms": 0.1, "bytes": len(FRAME), "time": stamp_text(STAMP)}
    assert first.frames == [] and [m["seq"] for m in second.frames] == [7]
    assert pool.healthy() == [second.url]  # the worker that answered 5xx is out until /health says otherwise


def test_a_retry_status_with_a_json_body_goes_to_the_next_worker():
    async def go() -> tuple[dict, FakeWorker]:
        async with fake_workers(2) as workers:
            first, second = by_rank(workers, "acct")
            first.frames_error = (503, "application/json", '{"error": "worker is shutting down"}')
            reply, _ = await forward(workers)
            return reply, second
    reply, second = asyncio.run(go())
    assert "error" not in reply and reply["worker"] == second.port


def test_a_non_json_answer_that_is_not_a_retry_status_is_an_unreadable_reply():
    # A 501 (not 500, 502, 503, 504): no retry, the client learns it.
    async def go() -> tuple[dict, FakeWorker]:
        async with fake_workers(2) as workers:
            first, second = by_rank(workers, "acct")
            first.frames_error = (501, "text/html", "<html>Not Implemented</html>")
            reply, _ = await forward(workers)
            return reply, second
    reply, second = asyncio.run(go())
    assert reply["error"].endswith("gave an unreadable reply") and reply["seq"] == 7
    assert second.frames == []


def test_a_whole_batch_500_goes_to_the_next_worker_which_stays_in_the_ring():
    # A worker answers its frames' own failures inside a 200: a whole-batch
    # 500 is a worker that failed mid-batch. The next choice takes the frame
    # (with the same stamp: a line the first may have written is not written
    # again); the first may have seen the frame, so its stream's close goes
    # there too. It stays in the ring: a frame that fails everywhere must not
    # take every worker out.
    async def go() -> tuple[dict, WorkerPool, list[str], FakeWorker, FakeWorker, dict]:
        async with fake_workers(2) as workers:
            first, second = by_rank(workers, "acct")
            first.frames_error = (500, "text/html", "<html>Internal Server Error</html>")
            pool = WorkerPool(tuple(w.url for w in workers))
            reached: list[str] = []
            async with aiohttp.ClientSession() as session:
                await pool.check(session)
                links = {w.url: WorkerLink(w.url, session, 5.0) for w in workers}
                reply = await forward_frame(pool, links, PACKET, "stream", 7, STAMP, 5.0, reached=reached)
                second.frames_error = (500, "application/json", '{"error": "boom"}')
                everywhere = await forward_frame(pool, links, PACKET, "stream", 8, STAMP + 1, 5.0)
            return reply, pool, reached, first, second, everywhere
    reply, pool, reached, first, second, everywhere = asyncio.run(go())
    assert "error" not in reply and reply["worker"] == second.port and reply["time"] == stamp_text(STAMP)
    assert [m["stamp"] for m in second.frames] == [STAMP]
    assert reached == [first.url, second.url]
    assert set(pool.healthy()) == {first.url, second.url}
    assert everywhere == {"account": "acct", "seq": 8, "time": stamp_text(STAMP + 1),
                          "error": "no worker available: tried 2: answered 500, answered 500; the frame may have "
                                   "been logged, at the reply's time"}


def test_a_frames_own_500_is_answered_and_not_sent_to_another_worker():
    # Its account's log cannot be written on that worker's host (the workers
    # of a host share --log-dir): the client is told at once, nothing is
    # retried, and the worker stays in the ring for its other accounts.
    async def go() -> tuple[dict, WorkerPool, FakeWorker, FakeWorker]:
        async with fake_workers(2) as workers:
            first, second = by_rank(workers, "acct")
            first.refuse, first.refuse_status = "frame log acct.txt cannot be written: is a directory", 500
            reply, pool = await forward(workers)
            return reply, pool, first, second
    reply, pool, first, second = asyncio.run(go())
    assert reply == {"account": "acct", "seq": 7, "error": "frame log acct.txt cannot be written: is a directory"}
    assert [m["seq"] for m in first.frames] == [7] and second.frames == []
    assert set(pool.healthy()) == {first.url, second.url}


def test_a_frames_own_503_goes_to_the_next_worker_and_no_worker_available_says_why():
    # 503 inside the batch: this worker cannot record now (a full disk). The
    # next worker takes the frame; when none can, the client reads each
    # worker's reason (which names no path).
    full = "this worker cannot record frames now: --log-dir cannot be written: no space left on device"

    async def go() -> tuple[dict, dict, WorkerPool, FakeWorker, FakeWorker]:
        async with fake_workers(2) as workers:
            first, second = by_rank(workers, "acct")
            first.refuse, first.refuse_status = full, 503
            moved, _ = await forward(workers)
            second.refuse, second.refuse_status = full, 503
            refused, pool = await forward(workers)
            return moved, refused, pool, first, second
    moved, refused, pool, first, second = asyncio.run(go())
    assert "error" not in moved and moved["worker"] == second.port
    assert refused == {"account": "acct", "seq": 7,
                       "error": f"no worker available: tried 2: answered 503 ({full}), answered 503 ({full})"}
    assert pool.healthy() == []


def test_every_worker_answering_a_retry_status_is_no_worker_available():
    async def go() -> dict:
        async with fake_workers(2) as workers:
            for w in workers:
                w.frames_error = (502, "text/html", PROXY_ERROR_PAGE)
            reply, _ = await forward(workers)
            return reply
    reply = asyncio.run(go())
    assert reply == {"account": "acct", "seq": 7,
                     "error": "no worker available: tried 2: answered 502, answered 502"}


def test_reached_names_the_workers_a_frame_may_have_reached():
    # What a stream's close must reach (balancer/closing.py): a worker that
    # answered, or that failed after the frame left (a timeout); not one that
    # said "not here" (503) or refused the connection.
    async def go() -> tuple[list[str], list[str], dict, list[str]]:
        async with fake_workers(3) as workers:
            first, second, third = by_rank(workers, "acct")
            first.frames_error = (503, "application/json", '{"error": "worker is shutting down"}')
            second.gate.clear()  # holds the frame past the timeout
            pool = WorkerPool(tuple(w.url for w in workers))
            reached: list[str] = []
            async with aiohttp.ClientSession() as session:
                await pool.check(session)
                links = {w.url: WorkerLink(w.url, session, 0.5) for w in workers}
                reply = await forward_frame(pool, links, PACKET, "stream", 7, STAMP, 0.5, reached=reached)
                second.gate.set()
            refused: list[str] = []
            async with aiohttp.ClientSession() as session:
                lone = closed_port_url()
                pool = WorkerPool((lone,))
                pool.mark(lone, True)
                await forward_frame(pool, {lone: WorkerLink(lone, session, 1.0)}, PACKET, "stream", 8, STAMP, 1.0,
                                    reached=refused)
            return reached, [second.url, third.url], reply, refused
    reached, expected, reply, refused = asyncio.run(go())
    assert "error" not in reply and reached == expected
    assert refused == []


def accounts_first_at(worker: FakeWorker, workers: list[FakeWorker], n: int) -> list[str]:
    urls = [w.url for w in workers]
    return [a for a in (f"acct{i}" for i in range(1000)) if rank_workers(a, urls)[0] == worker.url][:n]


def test_frames_waiting_for_a_worker_that_leaves_the_ring_go_to_the_next_at_once():
    """A worker holds a request (stuck); the frames of other connections
    wait for its link. When its /health fails and it leaves the ring, they
    go to the next worker at once, long before the stuck request's timeout;
    the request in flight waits for its timeout, as before."""
    async def go() -> tuple[list[dict], dict, FakeWorker, FakeWorker, list[str], list[float]]:
        async with fake_workers(2) as workers, balancer(workers, forward_timeout=30.0, health_interval=0.1) as client:
            stuck, other = by_rank(workers, "acct")
            first, *rest = accounts_first_at(stuck, workers, 4)
            stuck.gate.clear()
            link = client.server.app[LINKS][stuck.url]
            sockets = [await client.ws_connect("/ws") for _ in range(4)]
            try:
                for ws, account in zip(sockets, [first, *rest], strict=True):
                    await ws.send_str(f"ACCOUNTCODE={account}")
                    await ws.send_bytes(FRAME)
                    if ws is sockets[0]:  # its frame is the request in flight: the others wait behind it
                        await until(lambda: link.inflight == 1)
                # All four at the balancer: one in the stuck request, three waiting for its link.
                await until(lambda: client.server.app[TRAFFIC].frames_in_flight == 4)
                stuck.health = 503  # the poll takes it out of the ring
                moved = [await ws.receive_json(timeout=10) for ws in sockets[1:]]
                stuck.gate.set()  # the stuck request is answered at last
                held = await sockets[0].receive_json(timeout=10)
            finally:
                for ws in sockets:
                    await ws.close()
            async with client.get("/metrics") as resp:
                not_sent = [sample.value for family in text_string_to_metric_families(await resp.text())
                            for sample in family.samples
                            if sample.name == "voicestream_balancer_forward_failures_total"
                            and sample.labels == {"worker": stuck.url, "reason": "not_sent"}]
            return moved, held, stuck, other, rest, not_sent
    moved, held, stuck, other, rest, not_sent = asyncio.run(go())
    assert not_sent == [3]
    assert [(r["account"], r["worker"]) for r in moved] == [(a, other.port) for a in rest]
    assert held["worker"] == stuck.port
    assert len(stuck.frames) == 1 and len(other.frames) == 3, "the waiting frames never reached the stuck worker"


async def until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)
