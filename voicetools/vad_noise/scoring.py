"""Frame F1 of the speech class over the scored frames, and onset timing."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .labels import onsets


@dataclass(frozen=True, slots=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0


def count(labels: np.ndarray, voiced: np.ndarray, scored: np.ndarray) -> Counts:
    if not len(labels) == len(voiced) == len(scored):
        raise ValueError(f"labels ({len(labels)}), decisions ({len(voiced)}) and mask ({len(scored)}) differ in length")
    ref, hyp = labels[scored].astype(bool), voiced[scored].astype(bool)
    return Counts(int(np.sum(ref & hyp)), int(np.sum(~ref & hyp)), int(np.sum(ref & ~hyp)), int(np.sum(~ref & ~hyp)))


@dataclass(frozen=True, slots=True)
class Onsets:
    """delays: frames from each reference onset to the first voiced frame
    (from one frame before it, so -1 is a detector already on; a detector
    still on from the previous speech counts as early); missed: onsets of
    speech that ended before any voiced frame."""
    delays: tuple[int, ...] = ()
    missed: int = 0

    def __add__(self, other: Onsets) -> Onsets:
        return Onsets(self.delays + other.delays, self.missed + other.missed)

    @property
    def total(self) -> int:
        return len(self.delays) + self.missed

    @property
    def within_one_frame(self) -> float:
        """Share of all onsets whose first voiced frame is the onset's frame or the next."""
        return sum(d <= 1 for d in self.delays) / self.total if self.total else 0.0

    @property
    def mean_delay(self) -> float:
        """Mean delay in frames over the detected onsets (early ones count 0)."""
        return float(np.mean([max(d, 0) for d in self.delays])) if self.delays else 0.0


def onset_delays(labels: np.ndarray, voiced: np.ndarray) -> Onsets:
    delays, missed = [], 0
    for first, end in onsets(labels):
        hits = np.flatnonzero(voiced[first - 1:end])
        if len(hits):
            delays.append(int(hits[0]) - 1)
        else:
            missed += 1
    return Onsets(tuple(delays), missed)
