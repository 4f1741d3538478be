"""Per-account streaming state held by one worker process, and the registry
that forgets accounts nobody has used for a while.

Two locks, two kinds of data: the registry's lock guards which accounts exist
and who uses them; an account's own lock guards everything inside it (VAD
state, speech window, remembered replies). Nothing inside an account is
touched under the registry's lock, and the sweep never drops an account a
thread has taken: it would come back empty, its VAD state reset mid-speech.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from voicestream.events import Event
from voicestream.replies import FrameReply

from .speakers.tracker import SpeakerTrack
from .vad import VadStream

# Streams (client connections, or streams a client named) of an account
# whose replies are kept for retries and resends; the least recently used
# one goes first.
MAX_STREAMS_REMEMBERED = 64
# Replies kept per stream. A client that reconnects resends every frame it
# had no reply to: voicestream-replay and the console have one frame in
# flight, a client pipelining 100 ms frames over a link that stalls for
# 1.6 s has 16. A resent frame older than these is still never processed
# twice (its seq is behind the stream's), only its analysis is not repeated.
# About 0.7 KB a reply: 11 KB for an account's one stream.
REPLIES_PER_STREAM = 16


@dataclass(eq=False)
class StreamReplies:
    """What a worker answered one stream of an account: its last frames'
    replies by seq, and the highest seq it processed."""
    last: int = 0
    kept: OrderedDict[int, FrameReply] = field(default_factory=OrderedDict)

    def keep(self, seq: int, reply: FrameReply) -> None:
        self.kept[seq] = reply
        self.last = max(self.last, seq)
        if len(self.kept) > REPLIES_PER_STREAM:
            self.kept.popitem(last=False)

    def answer(self, stream: str, seq: int) -> FrameReply | None:
        """The answer to (stream, seq) sent again: its reply marked
        duplicate when kept, an error when seq is behind the stream's last
        frame (a stream's frames are processed once, in seq order), None
        for a frame after it (to be processed)."""
        if seq in self.kept:
            return {**self.kept[seq], "duplicate": True}
        if seq > self.last:
            return None
        if not self.kept or seq < next(iter(self.kept)):
            return {"error": f"frame seq {seq} of stream {stream} was already processed", "duplicate": True}
        # Between kept replies: a seq the stream skipped, arriving late.
        return {"error": f"frame seq {seq} of stream {stream} comes after its seq {self.last}: a stream's frames "
                         "are processed in seq order, so it is not processed"}


@dataclass(eq=False)
class Account:
    code: str
    # Held while one frame of this account is processed: frames of an account
    # run one at a time, in arrival order, and see each other's state.
    lock: threading.Lock = field(default_factory=threading.Lock)
    vad: VadStream | None = None
    # The speaker tracker's state of this account (worker/speakers/tracker.py);
    # None until the account has voiceprints.
    speech: SpeakerTrack | None = None
    voice: int | None = None  # the last frame's voice: speech_start / speech_end events
    # Events for a stream that another stream's frame produced (a segment of
    # its frames closed by a frame of another connection): sent with that
    # stream's next reply, or its CLOSE. At most MAX_STREAMS_REMEMBERED streams.
    outbox: dict[str, list[Event]] = field(default_factory=dict)
    # stream id -> its last replies: a retried or resent frame is answered, not redone.
    replies: dict[str, StreamReplies] = field(default_factory=dict)
    # Registry's lock: threads that took this account and have not released it.
    users: int = 0
    last_seen: float = field(default_factory=time.monotonic)

    def vad_stream(self, sample_rate: int) -> VadStream:
        if self.vad is None or self.vad.sample_rate != sample_rate:
            self.vad = VadStream(sample_rate)
        return self.vad

    def replayed(self, stream: str, seq: int | None) -> FrameReply | None:
        """The answer already due to this (stream, seq), if it is not a new
        frame of its stream (StreamReplies.answer)."""
        if seq is None or stream not in self.replies:
            return None
        return self.replies[stream].answer(stream, seq)

    def post(self, stream: str, events: list[Event]) -> None:
        """Keep events for stream's next reply."""
        if not events:
            return
        self.outbox.setdefault(stream, []).extend(events)
        if len(self.outbox) > MAX_STREAMS_REMEMBERED:
            del self.outbox[next(iter(self.outbox))]

    def collect(self, stream: str) -> list[Event]:
        """The events kept for stream, once."""
        return self.outbox.pop(stream, [])

    def remember(self, stream: str, seq: int | None, reply: FrameReply) -> None:
        """Keeps the reply of a frame processed, with the time of its line
        (HeldFrame.answer): a resend through another balancer has a stamp
        of its own, and its duplicate must name the line the frame has."""
        if seq is None:
            return
        replies = self.replies.pop(stream, None)  # re-inserted last: the most recently used
        if replies is None:
            replies = StreamReplies()
        replies.keep(seq, reply)
        self.replies[stream] = replies
        if len(self.replies) > MAX_STREAMS_REMEMBERED:
            del self.replies[next(iter(self.replies))]


class Accounts:
    """Accounts seen by this worker; ones nobody holds are forgotten after
    idle_seconds without a frame."""

    def __init__(self, idle_seconds: float = 300.0) -> None:
        self.idle_seconds = idle_seconds
        self._accounts: dict[str, Account] = {}
        self._lock = threading.Lock()
        self._next_sweep = time.monotonic() + idle_seconds

    def get(self, code: str) -> Account:
        """The account, taken: the sweep spares it until release()."""
        with self._lock:
            now = time.monotonic()
            account = self._accounts.get(code)
            if account is None:
                account = self._accounts[code] = Account(code)
            account.users += 1
            account.last_seen = now
            if now >= self._next_sweep:
                self._sweep(now)
            return account

    def release(self, account: Account) -> None:
        with self._lock:
            account.users -= 1
            account.last_seen = time.monotonic()

    @contextmanager
    def hold(self, codes: Iterable[str]) -> Iterator[dict[str, Account]]:
        """The accounts of codes, taken and locked for the with block."""
        accounts: dict[str, Account] = {}
        try:
            for code in codes:
                if code not in accounts:
                    accounts[code] = self.get(code)
            with ExitStack() as locked:
                # Always in code order, so two threads taking several account
                # locks never wait for each other in a cycle.
                for code in sorted(accounts):
                    locked.enter_context(accounts[code].lock)
                yield accounts
        finally:
            for account in accounts.values():
                self.release(account)

    def _sweep(self, now: float) -> None:
        idle = [code for code, a in self._accounts.items() if a.users == 0 and now - a.last_seen > self.idle_seconds]
        for code in idle:
            del self._accounts[code]
        self._next_sweep = now + self.idle_seconds

    def __len__(self) -> int:
        return len(self._accounts)
