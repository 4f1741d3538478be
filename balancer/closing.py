"""A stream's end: its close, sent to every worker that took frames of it.

A worker keeps an account's last labels pending until they are final
(--speaker-lag-ms of later frames); a stream that ends has no later frames,
so its end is said: POST /streams/close (voicestream/batch.py CLOSE_PATH)
makes them final now and answers their events. A client's CLOSE waits for
those answers and gets them as one StreamClosed message per account
(session.py). A client gone without CLOSE, an idle HTTP ingest stream
(http_streams.py) and a balancer shutting down send the same closes in the
background, their answers dropped: the account's record (segments file, rows)
still gets every final label.

The close goes to the workers that may hold the stream's state: those its
frames reached (forward.py's `reached`), in the order of their last frame.
Normally that is one worker, the account's first rendezvous choice; after a
failover it is also the one before, whose labels pending at its failure are
lost if it died, and made final now if it only left the ring for a while.
A worker that never saw the stream would answer an empty list: none is asked.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence

import aiohttp

from voicestream.batch import CLOSE_PATH, encode_close
from voicestream.events import Event
from voicestream.replies import StreamClosed

log = logging.getLogger("balancer.closing")

# Accounts one client connection keeps for its close; past it the one whose
# last frame is oldest is forgotten (its pending labels then become final
# when that worker next closes the account, or never). A client streams one
# account, a few at most: the bound only stops a connection that cycles
# through account codes from growing without end.
MAX_ACCOUNTS_PER_STREAM = 64


class StreamWorkers:
    """Per account of one stream, the workers its frames reached, in the
    order of their last frame (the most recent last)."""

    def __init__(self, max_accounts: int = MAX_ACCOUNTS_PER_STREAM) -> None:
        self.max_accounts = max_accounts
        self._accounts: dict[str, dict[str, None]] = {}

    def reached(self, account: str, workers: Sequence[str]) -> None:
        """A frame of account was sent, and may have reached workers."""
        known = self._accounts.pop(account, None)  # re-inserted last: the most recent
        if known is None:
            known = {}
            if len(self._accounts) >= self.max_accounts:
                del self._accounts[next(iter(self._accounts))]
        for worker in workers:
            known.pop(worker, None)
            known[worker] = None
        self._accounts[account] = known

    def take(self) -> list[tuple[str, tuple[str, ...]]]:
        """(account, its workers) of every account, in the order of their
        last frame, once: a second close has nothing to send."""
        taken = [(account, tuple(workers)) for account, workers in self._accounts.items()]
        self._accounts.clear()
        return taken

    def __len__(self) -> int:
        return len(self._accounts)


async def close_account(session: aiohttp.ClientSession, stream: str, account: str, workers: Sequence[str],
                        timeout: float) -> StreamClosed:
    """The StreamClosed of account: the events of every worker's answer, in
    the order of workers; an error naming the workers that did not answer."""
    answers = await asyncio.gather(*(close_at(session, worker, stream, account, timeout) for worker in workers))
    closed: StreamClosed = {"account": account, "closed": True,
                            "events": [event for answer in answers if isinstance(answer, list) for event in answer]}
    problems = [answer for answer in answers if isinstance(answer, str)]
    if problems:
        # Clients see what went wrong, not the workers' internal addresses.
        closed["error"] = (f"the close did not reach {len(problems)} of the {len(workers)} workers that took "
                           f"frames of this stream ({', '.join(problems)}): final labels pending there will "
                           "not come")
    return closed


async def close_at(session: aiohttp.ClientSession, worker: str, stream: str, account: str,
                   timeout: float) -> list[Event] | str:
    """The events worker owed to (account, stream), or what went wrong."""
    try:
        async with session.post(f"{worker}{CLOSE_PATH}", data=encode_close(account, stream),
                                headers={"Content-Type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            status, raw = resp.status, await resp.read()
    except TimeoutError:
        log.warning("worker %s did not answer the close of %s/%s within %g s", worker, account, stream, timeout)
        return f"timed out after {timeout:g} s"
    except aiohttp.ClientError as exc:
        log.warning("close of %s/%s at worker %s failed: %s", account, stream, worker, exc.__class__.__name__)
        return f"failed ({exc.__class__.__name__})"
    if status == 404:  # a worker from before closes: it keeps no pending labels
        return []
    events = None
    if status == 200:
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        events = answer.get("events") if isinstance(answer, dict) else None
    if not (isinstance(events, list) and all(isinstance(event, dict) for event in events)):
        log.warning("worker %s answered the close of %s/%s with %d: %r", worker, account, stream, status,
                    raw[:200])
        return f"answered {status}" if status != 200 else "gave an unreadable answer"
    return events


class Closer:
    """Closes whose answers nobody waits for, run in the background: the
    client is gone, or its HTTP stream went idle. Kept until they end, so
    the cleanup can give them what is left of the shutdown's time."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float) -> None:
        self.session = session
        self.timeout = timeout  # per close request: --forward-timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def close(self, stream: str, accounts: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Sends the close of each (account, its workers) of stream."""
        for account, workers in accounts:
            if not workers:
                continue
            task = asyncio.create_task(self._close(stream, account, workers),
                                       name=f"balancer: close {account}/{stream}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _close(self, stream: str, account: str, workers: Sequence[str]) -> None:
        closed = await close_account(self.session, stream, account, workers, self.timeout)
        if "error" in closed:  # close_at logged each failure
            log.warning("final labels of %s/%s may be missing: %s", account, stream, closed["error"])

    async def finish(self, deadline: float) -> None:
        """Waits for the closes under way until deadline (time.monotonic()),
        then cancels the rest: the session closes next."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        if late:
            log.warning("shutdown: %d closes cut short by --shutdown-timeout; their final labels may be missing",
                        len(late))
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)
