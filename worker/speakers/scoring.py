"""Scoring an embedding against an account's voiceprints: the decision
(an enrolled speaker, or "unknown") and the cached voiceprints per account.

The decision is the best-scoring speaker when its cosine score reaches the
threshold: the account's own (PUT /accounts/<code>/settings) when it set one
for this encoder, else the worker's. /verify also asks for a margin over the
second-best speaker (service.VERIFY_MARGINS); streaming does not. Measured
leave one speaker out on ../shared/data/speakers (voicestream-calibrate
--methods, docs/speakers.md#unknown-speakers): adaptive S-norm against a
cohort of the project's espeak-ng voices plus the account's other speakers
lowered both identification and rejection of streaming decisions (86.4% and
86.1% against 94.0% and 92.4% for the raw cosine), so scores are raw cosines."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..storage.protocol import VoiceprintStore
from ..storage.voiceprints import EncoderId

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Enrolled:
    """An account's voiceprints for one encoder, ready to score."""
    names: tuple[str, ...]
    matrix: np.ndarray  # (speakers, dim), unit rows
    threshold: float | None = None  # the account's own, for this encoder; None: the worker's


@dataclass(frozen=True)
class Decision:
    speaker: str      # a name, or UNKNOWN
    score: float      # best score
    best: str         # best-scoring name, even when below threshold
    scores: dict[str, float]


def decide(enrolled: Enrolled, embedding: np.ndarray, threshold: float, margin: float = 0.0) -> Decision:
    """threshold: the worker's, used unless the account set its own. margin:
    how far the best score must be above the second best (with two or more
    speakers) for a name."""
    if enrolled.threshold is not None:
        threshold = enrolled.threshold
    scores = enrolled.matrix @ embedding
    best = int(np.argmax(scores))
    score = float(scores[best])
    name = enrolled.names[best]
    clear = len(scores) < 2 or score - float(np.partition(scores, -2)[-2]) >= margin
    return Decision(name if score >= threshold and clear else UNKNOWN, score, name,
                    {n: float(s) for n, s in zip(enrolled.names, scores, strict=True)})


def enrolled_of(store: VoiceprintStore, account: str, encoder: EncoderId) -> Enrolled | None:
    """The account's voiceprints made by encoder, with its own threshold for
    that encoder kind; None without any."""
    prints = [v for v in store.list(account) if v.encoder == encoder]
    if not prints:
        return None
    own = store.threshold(account, encoder.name)
    return Enrolled(tuple(v.name for v in prints), np.stack([v.vector for v in prints]),
                    own.threshold if own is not None else None)


class Roster:
    """Voiceprints per account for the current encoder (and the account's own
    threshold), cached until the store
    changes (any worker's commit moves SQLite's data_version; with --database,
    any worker's NOTIFY). While the shared database is down, cached accounts
    keep their voiceprints."""

    MAX_CACHED_ACCOUNTS = 10_000

    def __init__(self, store: VoiceprintStore) -> None:
        self.store = store
        self._cache: dict[str, Enrolled | None] = {}
        self._version: int | None = None
        self._lock = threading.Lock()

    def enrolled(self, account: str, encoder: EncoderId) -> Enrolled | None:
        version = self.store.data_version()
        with self._lock:
            if version != self._version or len(self._cache) > self.MAX_CACHED_ACCOUNTS:
                self._cache.clear()
                self._version = version
            if account in self._cache:
                return self._cache[account]
        enrolled = enrolled_of(self.store, account, encoder)
        with self._lock:
            if self._version == version:
                self._cache[account] = enrolled
        return enrolled
