"""A frame's record: what its log line shows, and its key. Its own module so
the frame pipeline builds rows without loading psycopg on a worker that has
no --database (postgres/frames.py stores them)."""
from __future__ import annotations

from dataclasses import dataclass


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
    """The final speaker of a run of a stream's frames (a segment, events.Segment):
    frames start_seq to end_seq of the stream get it in their rows."""
    account: str
    stream: str
    start_seq: int
    end_seq: int
    speaker: str
    score: float | None
