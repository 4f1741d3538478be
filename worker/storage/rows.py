"""A frame's record: what its log line shows, and its key; and a segment's,
the final label of its frames. Its own module so the frame pipeline builds
them without loading psycopg on a worker that has no --database
(postgres/frames.py stores them)."""
from __future__ import annotations

from dataclasses import dataclass

from voicestream.events import Segment
from voicestream.stamps import text_stamp


@dataclass(frozen=True, slots=True)
class FrameRow:
    """One frame's result: what its log line shows, and its key."""
    account: str
    stream: str                  # the client connection
    seq: int                     # the frame's number within its stream
    stamp: int                   # the balancer's stamp: UTC microseconds
    voice: int
    worker: int                  # the port, as in the log line
    ms: float                    # model time; stored rounded, as the line shows it
    speaker: str | None = None
    score: float | None = None   # stored rounded to 2 places, as the line shows it


@dataclass(frozen=True, slots=True)
class FinalLabel:
    """A closed segment (events.Segment) as the account's record keeps it:
    frames start_seq to end_seq of the stream get its speaker and score in
    their rows, and the segment itself is a row of its own."""
    account: str
    stream: str
    start_seq: int
    end_seq: int
    speaker: str
    score: float | None
    frames: int      # how many frames' rows the range holds (a seq refused as invalid has none)
    start: int       # its first and last frames' stamps, UTC microseconds
    end: int

    @classmethod
    def of(cls, account: str, stream: str, segment: Segment) -> FinalLabel:
        return cls(account, stream, segment["start_seq"], segment["end_seq"], segment["speaker"], segment["score"],
                   segment["frames"], text_stamp(segment["start"]), text_stamp(segment["end"]))
