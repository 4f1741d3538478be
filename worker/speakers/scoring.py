"""Scoring an embedding against an account's voiceprints: the decision
(an enrolled speaker, or "unknown") and the cached voiceprints per account."""
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


@dataclass(frozen=True)
class Decision:
    speaker: str      # a name, or UNKNOWN
    score: float      # best score
    best: str         # best-scoring name, even when below threshold
    scores: dict[str, float]


def decide(enrolled: Enrolled, embedding: np.ndarray, threshold: float) -> Decision:
    scores = enrolled.matrix @ embedding
    best = int(np.argmax(scores))
    score = float(scores[best])
    name = enrolled.names[best]
    return Decision(name if score >= threshold else UNKNOWN, score, name,
                    {n: float(s) for n, s in zip(enrolled.names, scores, strict=True)})


class Roster:
    """Voiceprints per account for the current encoder, cached until the store
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
        prints = [v for v in self.store.list(account) if v.encoder == encoder]
        enrolled = Enrolled(tuple(v.name for v in prints), np.stack([v.vector for v in prints])) if prints else None
        with self._lock:
            if self._version == version:
                self._cache[account] = enrolled
        return enrolled
