"""The reply to one frame: what the worker answers and the client receives,
the one reply type of both sides.

The worker fills the analysis fields; the balancer adds account, seq and time
(the frame's stamp as text, which starts its log line). An error reply has
"error" and no analysis fields. A frame's HTTP status inside a batch travels
beside its reply (batch.py), not in it.
"""
from __future__ import annotations

from typing import TypedDict

from .events import Event


class FrameReply(TypedDict, total=False):
    account: str     # balancer
    seq: int         # balancer: counts a connection's packets from 1
    time: str        # balancer: the frame's stamp as its log line shows it
    voice: int       # 1 if speech was on at any VAD chunk of the frame
    prob: float      # highest speech probability of the frame's chunks
    db: float        # RMS level, dBFS
    worker: int      # port of the worker that processed it
    ms: float        # model time for this frame (VAD + speaker encoder)
    speaker: str     # enrolled speaker or "unknown" (accounts with voiceprints)
    score: float | None
    duplicate: bool  # already logged by an earlier attempt: not logged again
    error: str       # what was wrong; no analysis fields then
    events: list[Event]  # what changed at this frame, in order (events.py); absent when nothing did


class _Closed(TypedDict):
    account: str
    closed: bool  # always true
    events: list[Event]


class StreamClosed(_Closed, total=False):
    """The answer to a stream's CLOSE, one per account the stream sent frames
    for: the events its pending final labels made (events.py), then the
    balancer closes the connection."""
    # A worker that took frames of the stream did not answer its close: the
    # final labels pending there will not come (events holds the others').
    error: str
