"""Frames this worker processed but could not record: held, so that the
frame sent again completes its record instead of being processed again.

A frame's VAD and speaker tracking run before its record is written (the
line holds their result). When the write then fails (a full disk, its
account's unwritable log), the frame is answered with that error, yet the
account's state has moved past it: processing it a second time would feed
the same 100 ms to the VAD and the speaker windows twice. So what the frame
still owes its record - its log line, the segments it closed, its database
row - is kept here under (account, stream, seq), and the same frame sent
again (the client's resend, after the error or a reconnect) writes exactly
that: the line with the stamp it was processed under, the segments, the row.
Once recorded it stays as the frame's answer, for a further resend to get as
a duplicate. The entries are few (only failed frames come here) and bounded:
the oldest go first, and a frame whose entry went is then answered from the
account's memory of its stream (worker/accounts.py), never processed twice.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from voicestream.events import Event
from voicestream.replies import FrameReply
from voicestream.stamps import stamp_text

from .speakers.tracker import ClosedSegment
from .storage.rows import FrameRow

# Frames held at most. A full disk stops the worker after the frames already
# being processed (at most a batch, 256, per request thread); one account's
# unwritable log holds each of its frames until a resend or this bound.
MAX_HELD = 4096

Key = tuple[str, str, int]  # account, stream, seq


@dataclass(eq=False, slots=True)
class HeldFrame:
    """One processed frame's record, as far as it is written. Touched only
    under its account's lock."""
    account: str
    stream: str
    seq: int | None
    reply: FrameReply  # its analysis fields, as its reply will have them
    line: str  # its log line, with the stamp it was processed under
    once: bool  # the line's stamp is the balancer's: written once across workers
    row: FrameRow | None  # with --database
    events: list[Event]  # its own events, then its stream's segment events once those are written
    segments: list[ClosedSegment] = field(default_factory=list)  # closed by it, not yet written
    logged: bool | None = None  # None until its line is written (False: another worker had written it)
    answered: FrameReply | None = None  # its reply once its whole record is written
    stamp: int | None = None  # the stamp it was processed under: its line's time

    def answer(self, reply: FrameReply) -> FrameReply:
        """reply as kept for a resend: with the time of the frame's line
        (a resend through another balancer carries a stamp of its own)."""
        return reply if self.stamp is None else {**reply, "time": stamp_text(self.stamp)}

    @property
    def key(self) -> Key | None:
        return None if self.seq is None else (self.account, self.stream, self.seq)


class HeldFrames:
    """Thread-safe: request threads holding different accounts add and look
    up at once."""

    def __init__(self, limit: int = MAX_HELD) -> None:
        self.limit = limit
        self._frames: OrderedDict[Key, HeldFrame] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, account: str, stream: str, seq: int | None) -> HeldFrame | None:
        if seq is None or not self._frames:  # the usual case: nothing held, no lock taken
            return None
        with self._lock:
            return self._frames.get((account, stream, seq))

    def hold(self, frame: HeldFrame) -> None:
        """Keep frame (a frame without seq cannot be named again: not kept)."""
        key = frame.key
        if key is None:
            return
        with self._lock:
            self._frames[key] = frame
            self._frames.move_to_end(key)
            while len(self._frames) > self.limit:
                self._frames.popitem(last=False)
