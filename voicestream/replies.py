"""The reply to one frame: what the worker answers and the client receives.

The worker fills the analysis fields; the balancer adds account, seq and time
(the frame's stamp as text, which starts its log line). An error reply has
"error" and no analysis fields.
"""
from __future__ import annotations

from typing import TypedDict


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
    status: int      # worker -> balancer only, inside a batch: this frame's HTTP status


ANALYSIS_FIELDS = ("voice", "prob", "db", "worker", "ms")
SPEAKER_FIELDS = ("speaker", "score")
