"""HTTP ingest's streams: one per account and balancer process at a time.

Each POST is one frame. Were each its own stream, its segments (which never
span streams) would be one frame each; so an account's frames over HTTP form
one stream of this balancer, `http-<id>`, whose seq the balancer counts (the
client's own `seq` only goes back in the reply). A client that names its
stream and numbers its frames ("stream" and "seq" in the body) has that
stream instead, `c:<name>`, its frames named by the client's seq: the same
at every balancer, so a frame sent again after a failure is known at the
worker. A stream's frames are sent on one at a time, in arrival order: the
worker's tracker takes a stream's frames in seq order, and a frame that
overtook its predecessor would be refused as already passed.

A stream without a frame for IDLE_SECONDS is closed (closing.py): its last
labels become final and reach the account's record, where an HTTP client
reads them (GET /accounts/<code>/segments). The account's next frame starts
a new stream.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from .closing import Closer
from .packets import client_stream_id

log = logging.getLogger("balancer.http_streams")

# A client posting in real time sends a frame every 0.1 s: 5 s without one
# means it stopped (or lost its network for long enough that one segment
# split in two does no harm), and its last second of labels, pending until
# later frames come, is made final for the record instead of never.
IDLE_SECONDS = 5.0
SWEEP_SECONDS = 1.0  # how often idle streams are looked for
# Streams (accounts) kept at once; past it the least recently used idle one
# is closed early.
MAX_STREAMS = 10_000


StreamKey = tuple[str, str | None]  # (account, the client's name for the stream or None)


@dataclass(eq=False)
class HttpStream:
    account: str
    name: str | None = None  # the client's name for it, if it gave one
    stream: str = ""  # the id the workers know it by
    seq: int = 0  # frames of a stream the client did not name so far: the last one's seq at the worker
    # Frames of the stream sent or waiting to be: the stream is in use, never idle.
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one frame at a time, in order
    workers: dict[str, None] = field(default_factory=dict)  # the workers its frames reached, most recent last

    def __post_init__(self) -> None:
        if not self.stream:
            self.stream = f"http-{uuid.uuid4().hex}" if self.name is None else client_stream_id(self.name)

    @property
    def key(self) -> StreamKey:
        return self.account, self.name

    def reached(self, workers: list[str]) -> None:
        for worker in workers:
            self.workers.pop(worker, None)
            self.workers[worker] = None


class HttpStreams:
    """The open HTTP streams, least recently used first."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS, max_streams: int = MAX_STREAMS) -> None:
        self.idle_seconds = idle_seconds
        self.max_streams = max_streams
        self._streams: OrderedDict[StreamKey, HttpStream] = OrderedDict()

    def take(self, account: str, closer: Closer | None, name: str | None = None) -> HttpStream:
        """The account's stream (the one the client named, if it did), in
        use until release(); a new one if it had none (closing the least
        recently used idle one when full)."""
        key = (account, name)
        stream = self._streams.get(key)
        if stream is None:
            if len(self._streams) >= self.max_streams:
                self._evict(closer)
            stream = self._streams[key] = HttpStream(account, name)
        else:
            self._streams.move_to_end(key)
        stream.users += 1
        stream.last_used = time.monotonic()
        return stream

    def get(self, account: str, name: str | None = None) -> HttpStream | None:
        """The account's open stream (of that name), if it has one."""
        return self._streams.get((account, name))

    def release(self, stream: HttpStream) -> None:
        stream.users -= 1
        stream.last_used = time.monotonic()

    def idle(self, now: float) -> list[HttpStream]:
        """The streams unused since idle_seconds before now, removed: the
        caller closes them."""
        done = [s for s in self._streams.values() if s.users == 0 and now - s.last_used >= self.idle_seconds]
        for stream in done:
            del self._streams[stream.key]
        return done

    def take_all(self) -> list[HttpStream]:
        """Every stream, removed (shutdown)."""
        streams = list(self._streams.values())
        self._streams.clear()
        return streams

    def _evict(self, closer: Closer | None) -> None:
        victim = next((s for s in self._streams.values() if s.users == 0), None)
        if victim is None:  # every stream has a frame in flight: the map grows past its bound for now
            return
        del self._streams[victim.key]
        if closer is not None:
            close_streams(closer, [victim])

    def __len__(self) -> int:
        return len(self._streams)


def close_streams(closer: Closer, streams: list[HttpStream]) -> None:
    for stream in streams:
        closer.close(stream.stream, [(stream.account, tuple(stream.workers))])


async def sweep(streams: HttpStreams, closer: Closer, interval: float = SWEEP_SECONDS) -> None:
    """Forever: closes the streams that went idle."""
    while True:
        await asyncio.sleep(interval)
        try:
            close_streams(closer, streams.idle(time.monotonic()))
        except Exception:
            log.exception("closing idle HTTP streams failed; sweeping on")
