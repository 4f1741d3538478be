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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..audio import Audio
from ..metrics import SpeakerMetrics
from ..storage.protocol import StorageUnavailable
from ..storage.voiceprints import EncoderId
from .engine import SpeakerEngine
from .scoring import UNKNOWN, Enrolled, Roster, decide
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
UNREADABLE_LOG_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class SpeakerResult:
    """A frame's speaker: the decision in force (speaker and score None when
    the account has no enrolled speakers, the frame has no voice or no
    decision was made yet) and the encoder time the frame paid for it."""
    speaker: str | None
    score: float | None
    encoder_ms: float = 0.0


NO_SPEAKER = SpeakerResult(None, None)


class SpeakerState(Protocol):
    """An account as the tracker sees it (worker/accounts.py's Account): its
    code and its speaker stream, kept between frames. The caller holds the
    account's lock; the account's registry forgets both together."""
    code: str
    speech: SpeakerStream | None


@dataclass(frozen=True, slots=True)
class Due:
    enrolled: Enrolled
    stream: SpeakerStream
    input: np.ndarray  # what the encoder embeds for this decision


class SpeakerTracker:
    """Speaker decisions of the frame path (worker/pipeline.py); called under
    the accounts' locks."""

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

    def on_frames(self, frames: Sequence[tuple[SpeakerState, Audio, int]]) -> list[SpeakerResult]:
        """The speaker of each frame (one each of distinct accounts, whose
        locks the caller holds; voice is the frame's VAD decision). The inputs
        due for a decision are embedded together, in one call."""
        results = [NO_SPEAKER] * len(frames)
        if not self.engine.ready:
            return results
        due: list[tuple[int, SpeakerState, Due]] = []
        for i, (account, audio, voice) in enumerate(frames):
            step = self._add(account, audio, voice)
            if isinstance(step, Due):
                due.append((i, account, step))
            else:
                results[i] = step
        for kind in {d.stream.kind for _, _, d in due}:
            self._decide([(i, d) for i, _, d in due if d.stream.kind == kind], kind, results)
        return results

    def _decide(self, due: list[tuple[int, Due]], kind: str, results: list[SpeakerResult]) -> None:
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
            results[i] = SpeakerResult(d.stream.speaker, d.stream.score, encoder_ms)

    def _unreadable(self, account: str, exc: StorageUnavailable) -> None:
        # Once per UNREADABLE_LOG_SECONDS: an outage would otherwise log every frame.
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + UNREADABLE_LOG_SECONDS
            log.warning("voiceprints of account %s unreadable (%s); frames go without speakers meanwhile",
                        account, exc)

    def _add(self, account: SpeakerState, audio: Audio, voice: int) -> SpeakerResult | Due:
        """The frame's result, or its voiceprints and window when a decision is due."""
        encoder = self.engine.encoder
        assert encoder is not None  # on_frames checked that the engine is ready
        try:
            enrolled = self.roster.enrolled(account.code, EncoderId(encoder.name, encoder.model, encoder.dim))
        except StorageUnavailable as exc:
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
            return SpeakerResult(stream.speaker, stream.score) if voice else NO_SPEAKER
        return Due(enrolled, stream, due)
