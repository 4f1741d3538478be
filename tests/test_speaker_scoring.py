"""Scoring an embedding against an account's voiceprints (pure): the
decision, the account's own threshold, /verify's margin."""
from __future__ import annotations

import numpy as np
import pytest

from worker.speakers.scoring import UNKNOWN, Enrolled, decide


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


def test_decision_picks_the_best_speaker_above_threshold_else_unknown():
    enrolled = Enrolled(("alice", "bob", "carol"), np.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0), unit(0, 0, 1, 0)]))
    near_bob = unit(0.1, 1, 0.2, 0)
    d = decide(enrolled, near_bob, threshold=0.7)
    assert d.speaker == "bob" and d.best == "bob" and d.score == pytest.approx(float(near_bob[1]))
    assert set(d.scores) == {"alice", "bob", "carol"}
    between = unit(1, 1, 1, 0)
    d = decide(enrolled, between, threshold=0.7)
    assert d.speaker == UNKNOWN and d.score == pytest.approx(1 / np.sqrt(3), abs=1e-6)


def test_the_account_threshold_overrides_the_workers_in_the_decision():
    matrix = np.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0)])
    near_alice = unit(1, 0.5, 0, 0)  # 0.894 to alice
    assert decide(Enrolled(("alice", "bob"), matrix), near_alice, threshold=0.7).speaker == "alice"
    strict = Enrolled(("alice", "bob"), matrix, threshold=0.95)
    assert decide(strict, near_alice, threshold=0.7).speaker == UNKNOWN
    lenient = Enrolled(("alice", "bob"), matrix, threshold=0.5)
    assert decide(lenient, near_alice, threshold=0.99).speaker == "alice"


def test_a_margin_names_only_a_speaker_clear_of_the_second_best():
    enrolled = Enrolled(("alice", "bob"), np.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0)]))
    between = unit(1, 0.9, 0, 0)  # 0.743 to alice, 0.669 to bob: 0.074 apart
    assert decide(enrolled, between, threshold=0.7).speaker == "alice"
    assert decide(enrolled, between, threshold=0.7, margin=0.07).speaker == "alice"
    held = decide(enrolled, between, threshold=0.7, margin=0.08)
    assert held.speaker == UNKNOWN and held.best == "alice"
    alone = Enrolled(("alice",), unit(1, 0, 0, 0)[None])
    assert decide(alone, between, threshold=0.7, margin=0.5).speaker == "alice"  # nobody to be clear of
