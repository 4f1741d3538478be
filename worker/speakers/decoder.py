"""One account's speaker labels, frame by frame: the immediate label of
each voiced frame (forward filtering) and, up to `lag` seconds later, its
final label (fixed-lag smoothing). The model is hmm.py's.

A window ending at a frame covers the second of speech before it, so it
says most about the frame half a window earlier. The immediate label can
only use it as it comes; the final decoder treats each window as an
observation of the frame `shift` seconds before its end (the latest window
covering that frame within `shift`, and never one from after a pause that
began a new run of speech), then smooths over the `lag - shift` seconds
after. So a final label uses the audio up to `lag` after its frame. With
no lag, a final label is the frame's immediate one (the final decoder gives a
frame without a window of its own the window before it, so on its own it can
differ from the forward filter on a frame in a turn's change).

Frames carry an opaque reference (the caller's: stream, seq, stamp); the
decoder only keeps the last few seconds of them.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from .hmm import ScoreModel, TurnModel, backward, predict, update
from .scoring import UNKNOWN

Ref = TypeVar("Ref")
# Mixing is given per FRAME_SECONDS of speech; frames of other lengths scale it.
FRAME_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Label:
    speaker: str
    score: float | None  # the window score of speaker (unknown: the best voiceprint's)


@dataclass(frozen=True, slots=True)
class Final(Generic[Ref]):
    """A voiced frame's final label."""
    ref: Ref
    label: Label
    after_gap: bool  # unvoiced frames came between this frame and the voiced one before it
    ends_run: bool   # unvoiced frames came right after it: no voiced frame continues it


@dataclass(frozen=True, slots=True)
class Observation:
    scores: np.ndarray  # per enrolled speaker, in the decoder's order
    seconds: float      # the window's speech


@dataclass(eq=False)
class _Voiced(Generic[Ref]):
    ref: Ref
    run: int           # run of speech (a pause begins a new one)
    voiced_end: float  # voiced seconds of the stream at its end
    stream_end: float  # stream seconds (voiced or not) at its end
    mix: float         # transition into this frame
    after_gap: bool
    window: Observation | None = None  # the window ending here
    obs: Observation | None = None     # the final decoder's observation, once settled
    settled: bool = False
    alpha: np.ndarray | None = None    # the final decoder's forward posterior
    likelihood: np.ndarray | None = None  # exp of obs's log-likelihoods, scaled to a maximum of 1
    immediate: Label | None = None     # its immediate label


@dataclass
class SpeakerDecoder(Generic[Ref]):
    names: tuple[str, ...]
    scores: ScoreModel
    turns: TurnModel
    lag: float    # seconds after a frame by which its final label is given
    shift: float  # seconds a window's observation is moved back (at most lag)
    alpha: np.ndarray | None = None        # immediate posterior; None until a first window
    observed: np.ndarray | None = None     # the immediate posterior as the latest window left it
    _final_alpha: np.ndarray | None = None
    _pending: deque[_Voiced[Ref]] = field(default_factory=deque)  # not final yet, oldest first
    _run_windows: deque[_Voiced[Ref]] = field(default_factory=deque)  # recent frames with a window
    _run: int = -1
    _gap: float = float("inf")  # unvoiced seconds since the last voiced frame
    _voiced: float = 0.0
    _stream: float = 0.0
    _last_obs: Observation | None = None
    _last_ll: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def labels(self) -> tuple[str, ...]:
        return (*self.names, UNKNOWN)

    def add(self, ref: Ref, seconds: float, voice: int, window: Observation | None = None
            ) -> tuple[Label | None, list[Final[Ref]]]:
        """One frame of the stream (window: the one that ended with it, if
        any). Its immediate label (None when unvoiced or before a first
        window) and the frames whose labels became final, oldest first."""
        self._stream += seconds
        if not voice:
            self._gap += seconds
            return None, self._finals(force=False)
        pause = self._gap >= self.turns.pause_frames * FRAME_SECONDS - 1e-9
        if pause:
            self._run += 1
        mix = self.turns.pause_mix if pause else 1.0 - (1.0 - self.turns.speech_mix) ** (seconds / FRAME_SECONDS)
        after_gap = 0 < self._gap < float("inf")
        self._gap = 0.0
        self._voiced += seconds
        frame = _Voiced(ref, self._run, self._voiced, self._stream, mix, after_gap, window)
        self._pending.append(frame)
        if window is not None:
            self._run_windows.append(frame)
            likelihoods = self.scores.log_likelihoods(window.scores, window.seconds)
            prior = self.turns.prior(len(self.names)) if self.alpha is None else predict(self.alpha, mix)
            self.alpha = self.observed = update(prior, likelihoods)
        elif self.alpha is not None:
            self.alpha = predict(self.alpha, mix)
        label = None if self.alpha is None else self._label(self.alpha, window or self._latest_window())
        frame.immediate = label
        return label, self._finals(force=False)

    def flush(self) -> list[Final[Ref]]:
        """Every pending frame's final label now, with the audio there is (a CLOSE)."""
        return self._finals(force=True)

    # --- the final decoder ---

    def _latest_window(self) -> Observation | None:
        return self._run_windows[-1].window if self._run_windows else None

    def _label(self, posterior: np.ndarray, window: Observation | None) -> Label:
        best = int(np.argmax(posterior))
        speaker = self.labels[best]
        if window is None or not len(window.scores):
            return Label(speaker, None)
        score = window.scores[best] if best < len(self.names) else window.scores.max()
        return Label(speaker, float(score))

    def _observation(self, frame: _Voiced[Ref], force: bool) -> tuple[bool, Observation | None]:
        """(settled, observation) of frame for the final decoder: the latest
        window of its run ending at most `shift` after it that still covers it."""
        newest = self._pending[-1]
        horizon = frame.voiced_end + self.shift + 1e-9
        if not force and newest.run == frame.run and newest.voiced_end < horizon - 2e-9:
            return False, None  # windows that could cover it may still come
        chosen: Observation | None = None
        for candidate in reversed(self._run_windows):
            if candidate.run != frame.run or candidate.voiced_end > horizon:
                continue
            window = candidate.window
            assert window is not None
            if candidate.voiced_end - window.seconds < frame.voiced_end - 1e-9:  # it covers the frame
                chosen = window
            break
        return True, chosen

    def _settle(self, force: bool, until: _Voiced[Ref] | None = None) -> None:
        """Forward filtering over the frames whose observation is settled, in
        order; with force, frames up to `until` are settled with the windows
        there are (a frame whose final label is due now)."""
        forcing = force
        for frame in self._pending:
            if frame.settled:
                if frame is until:
                    forcing = False
                continue
            settled, obs = self._observation(frame, forcing)
            if frame is until:
                forcing = False
            if not settled:
                return
            frame.settled, frame.obs = True, obs
            likelihoods = self._log_likelihoods(obs)
            prior = (self.turns.prior(len(self.names)) if self._final_alpha is None
                     else predict(self._final_alpha, frame.mix))
            self._final_alpha = frame.alpha = update(prior, likelihoods)
            frame.likelihood = np.exp(likelihoods - likelihoods.max())

    def _finals(self, force: bool) -> list[Final[Ref]]:
        self._settle(force=False)
        out: list[Final[Ref]] = []
        while self._pending:
            frame = self._pending[0]
            smooth_until = frame.voiced_end + self.lag - self.shift
            have_lookahead = frame.settled and any(f.settled and f.voiced_end >= smooth_until - 1e-9
                                                   for f in reversed(self._pending))
            due = force or self._stream - frame.stream_end >= self.lag - 1e-9
            if not have_lookahead and not due:
                break
            if not frame.settled:
                self._settle(force=True, until=None if force else frame)
            following = self._pending[1] if len(self._pending) > 1 else None
            ends_run = following.after_gap if following is not None else self._gap > 0
            label = (frame.immediate if self.lag <= 0 else None) or self._smoothed(frame, smooth_until)
            out.append(Final(frame.ref, label, frame.after_gap, ends_run))
            self._pending.popleft()
        self._forget_windows()
        return out

    def _forget_windows(self) -> None:
        """Keep the windows a pending frame may still take as its observation
        (and the newest, whose score an immediate label shows)."""
        windows = self._run_windows
        while len(windows) > 1:
            if not self._pending:
                windows.popleft()
                continue
            oldest = self._pending[0]
            if windows[0].run < oldest.run or (windows[1].run == oldest.run
                                                and windows[1].voiced_end <= oldest.voiced_end + 1e-9):
                windows.popleft()  # a later window is that frame's (and every later frame's) candidate
                continue
            break

    def _log_likelihoods(self, obs: Observation | None) -> np.ndarray:
        """obs's log-likelihoods; consecutive frames often share one window: computed once for it."""
        if obs is None:
            return np.zeros(len(self.names) + 1)
        if obs is not self._last_obs:
            self._last_obs, self._last_ll = obs, self.scores.log_likelihoods(obs.scores, obs.seconds)
        return self._last_ll

    def _smoothed(self, frame: _Voiced[Ref], until: float) -> Label:
        """frame's final label: its forward posterior times the backward
        message of the settled frames after it, up to `until`. In probability
        space, each step scaled to sum 1: only the argmax is wanted."""
        assert frame.alpha is not None
        after = [f for f in self._pending if f is not frame and f.settled and frame.voiced_end < f.voiced_end
                 <= until + 1e-9]
        if not after:
            return self._label(frame.alpha, frame.obs)
        beta = np.ones(len(self.names) + 1)
        for f in reversed(after):
            assert f.likelihood is not None
            beta = backward(beta, f.likelihood, f.mix)
        return self._label(frame.alpha * beta, frame.obs)
