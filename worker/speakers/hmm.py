"""Who is speaking, decided over time: a hidden Markov model over the states
{each enrolled speaker, unknown}, fed one observation per scored window.

The observation is the window's cosine score against each voiceprint. A
speaker state's log-likelihood against the unknown state is
``beta * g(L) * (score - tau(L))``: evidence for that speaker grows with how
far its score is above the threshold for a window of L seconds, and shorter
windows say less (g) at a lower score (tau). The unknown state is the
reference (0): a stranger is whoever no voiceprint explains, so it needs no
voiceprint of its own.

Scores depend on the window's length: on ../shared/data/speakers (GE2E,
leave one speaker out), mean target / non-target-best scores were
0.652/0.571 at 0.5 s, 0.698/0.593 at 0.8 s, 0.717/0.602 at 1 s and
0.744/0.616 at 1.6 s: both follow c - b / L (their midpoint within 0.003 of
0.71 - 0.05 / L at every length), and the gap between them, what a score
tells, shrinks as 0.149 - 0.034 / L.

Transitions mix the previous posterior toward uniform: a little per frame of
continuous speech (a speaker rarely hands over without a pause), much after
a pause (a pause is where turns change). Mixing toward uniform, rather than
"switch to one of the others", keeps the previous speaker the most likely
one until new evidence arrives, whatever the number of states.

Immediate labels come from forward filtering; final labels from fixed-lag
smoothing (forward-backward over the frames after a frame, up to its lag).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ScoreModel:
    """How a window's scores become evidence, per encoder."""
    threshold: float      # tau at a 1 s window: a speaker's score must pass it to beat unknown
    length_shift: float   # b of tau(L) = threshold + b - b / L (0: no length dependence)
    length_weight: float  # r of g(L) = max(0, 1 + r (1 - 1 / L)) (0: every window counts alike)
    beta: float           # nats of evidence per unit of score, per window

    def with_threshold(self, threshold: float) -> ScoreModel:
        return ScoreModel(threshold, self.length_shift, self.length_weight, self.beta)

    def tau(self, seconds: float) -> float:
        return self.threshold + self.length_shift - self.length_shift / seconds

    def weight(self, seconds: float) -> float:
        return max(0.0, 1.0 + self.length_weight * (1.0 - 1.0 / seconds))

    def log_likelihoods(self, scores: np.ndarray, seconds: float) -> np.ndarray:
        """Per state (the speakers in order, then unknown), up to a constant."""
        out = np.zeros(len(scores) + 1)
        out[:-1] = self.beta * self.weight(seconds) * (scores - self.tau(seconds))
        return out


@dataclass(frozen=True, slots=True)
class TurnModel:
    """How likely the speaker changes between two voiced frames."""
    speech_mix: float   # after a voiced frame: how much of the posterior goes to uniform
    pause_mix: float    # after a pause of at least pause_frames unvoiced frames
    pause_frames: int
    unknown_prior: float  # P(unknown) when a stream starts

    def prior(self, speakers: int) -> np.ndarray:
        p = np.full(speakers + 1, (1.0 - self.unknown_prior) / max(speakers, 1))
        p[-1] = self.unknown_prior if speakers else 1.0
        return p / p.sum()


def predict(posterior: np.ndarray, mix: float) -> np.ndarray:
    """One transition: P(state now) from P(state before)."""
    return (1.0 - mix) * posterior + mix / len(posterior)


def update(prior: np.ndarray, log_likelihoods: np.ndarray) -> np.ndarray:
    """Bayes' rule: the posterior after an observation."""
    log_post = np.log(np.maximum(prior, 1e-300)) + log_likelihoods
    post = np.exp(log_post - log_post.max())
    return post / post.sum()


def backward(beta_next: np.ndarray, likelihood_next: np.ndarray, mix: float) -> np.ndarray:
    """beta_t from beta_{t+1}, the likelihood of the observation at t+1 (in
    probability space, any scale) and the mix of the transition t -> t+1
    (uniform mixing: O(states)); scaled to sum 1, as only ratios matter."""
    y = beta_next * likelihood_next
    beta = (1.0 - mix) * y + mix * y.mean()
    return beta / beta.sum()
