"""Scoring an embedding against an account's voiceprints: the decision
(an enrolled speaker, or "unknown") and the cached voiceprints per account.

The decision is the best-scoring speaker when its cosine score reaches the
threshold: the account's own (PUT /accounts/<code>/settings) when it set one
for this encoder, else the worker's. Measured against the other methods of
the field on ../shared/data/speakers, leave one speaker out
(scripts/calibrate.py, docs/speakers.md#unknown-speakers): adaptive S-norm
against a cohort of the project's espeak-ng voices plus the account's other
speakers lowered the balance of identified and rejected windows (best 89%
against 92% for the raw score), and a margin over the second-best speaker
changed it by under 0.5 points; neither is used."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .store import EncoderId, Voiceprints

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


def decide(enrolled: Enrolled, embedding: np.ndarray, threshold: float) -> Decision:
    """threshold: the worker's, used unless the account set its own."""
    if enrolled.threshold is not None:
        threshold = enrolled.threshold
    scores = enrolled.matrix @ embedding
    best = int(np.argmax(scores))
    score = float(scores[best])
    name = enrolled.names[best]
    return Decision(name if score >= threshold else UNKNOWN, score, name,
                    {n: float(s) for n, s in zip(enrolled.names, scores, strict=True)})


def enrolled_of(store: Voiceprints, account: str, encoder: EncoderId) -> Enrolled | None:
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

    def __init__(self, store: Voiceprints) -> None:
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
