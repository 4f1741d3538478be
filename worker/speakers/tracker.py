"""Streaming speaker verification: which enrolled speaker is talking now.

Per account, a speaker stream (streaming.py) takes the voiced frames
(VAD-gated). Every hop of new speech it hands the encoder what is new (GE2E:
one partial utterance; ECAPA: the window), and the embedding is scored
against all of the account's voiceprints made by this worker's encoder; the
decision (best speaker, or "unknown") holds for the following voiced frames
until the next one. Unvoiced frames carry no speaker.

Accounts without voiceprints pay one cached lookup per frame: no buffering,
no embedding.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

import numpy as np

from ..accounts import Account
from ..audio import Audio
from ..metrics import SpeakerMetrics
from .engine import SpeakerEngine
from .scoring import UNKNOWN, Enrolled, Roster, decide
from .store import EncoderId, StoreUnavailable
from .streaming import SpeakerStream, stream_for

log = logging.getLogger("worker.speakers")

# Speech a turn needs before its first decision (--first-decision-seconds,
# capped by --window-seconds):
# decisions on less are the noisiest. Leave one speaker out on
# ../shared/data/speakers (GE2E, 2 s window, voicestream-calibrate --methods),
# 1.5 s -> 2 s: at thresholds chosen on the other folds, enrolled speakers
# identified 91.8% -> 94.0% and stranger decisions unknown 91.9% -> 92.4%
# (at 0.70: 94.4% -> 96.1% and 87.0% -> 86.1%). 1 s windows had 19% EER.
MIN_WINDOW_SECONDS = 2.0
NO_SPEAKER: tuple[None, None, float] = (None, None, 0.0)
UNREADABLE_LOG_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Due:
    enrolled: Enrolled
    stream: SpeakerStream
    input: np.ndarray  # what the encoder embeds for this decision


class SpeakerTracker:
    """worker/pipeline.py's SpeakerTracker; called under the account's lock."""

    def __init__(self, engine: SpeakerEngine, roster: Roster, threshold: float,
                 window_seconds: float, hop_seconds: float, reset_seconds: float,
                 first_decision_seconds: float = MIN_WINDOW_SECONDS) -> None:
        self.engine = engine
        self.roster = roster
        self.threshold = threshold
        self.window_seconds = window_seconds
        self.hop_seconds = hop_seconds
        self.reset_seconds = reset_seconds
        self.first_decision_seconds = first_decision_seconds
        self._quiet_until = 0.0
        self.metrics = SpeakerMetrics()  # registered by create_app

    def on_frames(self, frames: list[tuple[Account, Audio, int]]) -> list[tuple[str | None, float | None, float]]:
        """One frame each of distinct accounts, whose locks the caller holds.
        The inputs due for a decision are embedded together, in one call."""
        results: list[tuple[str | None, float | None, float]] = [NO_SPEAKER] * len(frames)
        if not self.engine.ready:
            return results
        due: list[tuple[int, Account, Due]] = []
        for i, (account, audio, voice) in enumerate(frames):
            step = self._add(account, audio, voice)
            if isinstance(step, Due):
                due.append((i, account, step))
            else:
                results[i] = step
        for kind in {d.stream.kind for _, _, d in due}:
            self._decide([(i, d) for i, _, d in due if d.stream.kind == kind], kind, results)
        return results

    def _decide(self, due: list[tuple[int, Due]], kind: str,
                results: list[tuple[str | None, float | None, float]]) -> None:
        try:
            outputs, encoder_ms = self.engine.embed([d.input for _, d in due], kind)
        except Exception:
            # A failed embedding loses one decision, never the frame.
            self.metrics.embedding_failures.inc()
            log.exception("speaker embedding failed for %d accounts", len(due))
            return
        self.metrics.embedding_seconds.observe(encoder_ms / 1000)
        for (i, d), output in zip(due, outputs, strict=True):
            embedding = d.stream.embedded(output)
            if embedding is not None:
                decision = decide(d.enrolled, embedding, self.threshold)
                d.stream.decided(decision.speaker, decision.score)
                (self.metrics.unknown if decision.speaker == UNKNOWN else self.metrics.known).inc()
            results[i] = (d.stream.speaker, d.stream.score, encoder_ms)

    def _unreadable(self, account: str, exc: Exception) -> None:
        # Once per UNREADABLE_LOG_SECONDS: an outage would otherwise log every frame.
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + UNREADABLE_LOG_SECONDS
            log.warning("voiceprints of account %s unreadable (%s: %s); frames go without speakers meanwhile",
                        account, exc.__class__.__name__, exc)

    def _add(self, account: Account, audio: Audio, voice: int) -> tuple[str | None, float | None, float] | Due:
        """The frame's result, or its voiceprints and window when a decision is due."""
        encoder = self.engine.encoder
        assert encoder is not None  # on_frames checked that the engine is ready
        try:
            enrolled = self.roster.enrolled(account.code, EncoderId(encoder.name, encoder.model, encoder.dim))
        except (sqlite3.Error, StoreUnavailable) as exc:
            # The store unreadable (locked past the busy timeout, disk gone,
            # the shared database down): this frame goes without a speaker,
            # not without a reply.
            self._unreadable(account.code, exc)
            return NO_SPEAKER
        if enrolled is None:
            account.speech = None
            return NO_SPEAKER
        stream = account.speech
        if stream is None or stream.sample_rate != audio.sample_rate:
            stream = account.speech = stream_for(encoder.name, audio.sample_rate, self.window_seconds,
                                                 self.hop_seconds, self.reset_seconds, self.first_decision_seconds,
                                                 getattr(encoder, "basis", None))
        due = stream.add(audio.samples, voice)
        if due is None:
            return (stream.speaker, stream.score, 0.0) if voice else NO_SPEAKER
        return Due(enrolled, stream, due)
