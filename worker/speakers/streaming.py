"""An account's speech as its speaker encoder sees it while it streams.

A stream takes each frame's samples once: it brings them to 16 kHz (a
streaming filter, not the whole window again every hop) and keeps what its
encoder needs for the next decision.

- GE2E (``Ge2eStream``): resemblyzer embeds an utterance as the mean of
  1.6 s "partial" embeddings. Here partials sit at fixed positions of the
  account's voiced speech, one every hop, so each decision runs the LSTM on
  the one partial that is new and averages it with the partials before it
  that fall in the window. The mel frames are computed once per frame, as
  the samples arrive. Re-embedding a 2 s window every 0.5 s ran the LSTM on
  3.2 s of audio per 0.5 s of speech; this runs it on 1.6 s.
- ECAPA (``WindowStream``): the graph embeds the whole window (its
  normalization is over the window), so the window is kept at 16 kHz and
  embedded every hop.

``stream_embeddings`` runs a recording through the same code, frame by frame,
for voicestream-calibrate and the tests.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.signal import firwin, upfirdn

from ..audio import Audio
from ..vad import VadEngine, VadStream
from .encoders import SAMPLE_RATE, unit_rows
from .ge2e_features import (
    GE2E_HOP,
    GE2E_N_FFT,
    GE2E_PARTIAL_FRAMES,
    GE2E_TARGET_DBFS,
    mel_of_frames,
)

FRAME_SECONDS = 0.1
PARTIALS, WINDOWS = "partials", "windows"  # what a stream hands its encoder: engine.py

# The 8 -> 16 kHz filter of scipy's resample_poly(x, 2, 1), run as a stream:
# the same output, 20 samples (1.25 ms) behind.
_UP = 2
_HALF = 10 * _UP
_TAPS = firwin(2 * _HALF + 1, 1.0 / _UP, window=("kaiser", 5.0)) * _UP
_HISTORY = _HALF  # input samples the filter still needs from earlier frames


@dataclass
class Upsampler:
    """8 kHz to 16 kHz, frame by frame, with the filter's memory carried
    across frames: per-frame resample_poly would zero-pad each 100 ms frame's
    edges, a click every frame in the encoder's input."""
    history: np.ndarray = field(default_factory=lambda: np.zeros(_HISTORY, np.float32))
    started: bool = False

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        z = np.concatenate((self.history, samples))
        out = upfirdn(_TAPS, z, _UP)
        first = 2 * _HISTORY + (0 if self.started else _HALF)
        self.history, self.started = z[-_HISTORY:], True
        return out[first:2 * len(z)].astype(np.float32)


def to_16k_stream(rate: int) -> Upsampler | None:
    if rate == SAMPLE_RATE:
        return None
    if rate * _UP != SAMPLE_RATE:
        raise ValueError(f"speaker streams take 8 or 16 kHz, not {rate} Hz")
    return Upsampler()


class SpeakerStream(Protocol):
    """One account's speaker state at one sample rate (Account.speech)."""
    sample_rate: int
    kind: str  # PARTIALS or WINDOWS: which encoder call takes its input
    speaker: str | None
    score: float | None

    def add(self, samples: np.ndarray, voice: int) -> np.ndarray | None:
        """Take one frame at the stream's rate; the encoder input of a
        decision when one is due."""

    def embedded(self, output: np.ndarray) -> np.ndarray | None:
        """The decision's embedding (a unit vector) from the encoder's output
        for the input add() returned; None when it is too early to decide."""

    def decided(self, speaker: str, score: float) -> None: ...


@dataclass
class _Turn:
    """What every stream counts: voiced speech since the last decision and
    the silence that ends a turn."""
    sample_rate: int
    hop: int            # new voiced samples (16 kHz) between decisions
    min_samples: int    # voiced samples (16 kHz) before a first decision
    reset_after: int    # unvoiced samples (stream rate) that end the turn; 0: never
    silence: int = 0
    speaker: str | None = None
    score: float | None = None
    upsampler: Upsampler | None = None

    def __post_init__(self) -> None:
        self.upsampler = to_16k_stream(self.sample_rate)

    def voiced_16k(self, samples: np.ndarray, voice: int) -> np.ndarray | None:
        """The frame at 16 kHz when it is voiced; counts silence otherwise."""
        if not voice:
            self.silence += len(samples)
            if self.reset_after and self.silence >= self.reset_after:
                self.clear()
            return None
        self.silence = 0
        return self.upsampler(samples) if self.upsampler is not None else samples

    def decided(self, speaker: str, score: float) -> None:
        self.speaker, self.score = speaker, score

    def clear(self) -> None:
        """A long silence ends a turn: the next speaker starts from nothing,
        and the old decision does not stick to them."""
        self.speaker = self.score = None
        self.upsampler = to_16k_stream(self.sample_rate)


@dataclass
class WindowStream(_Turn):
    """The last window_seconds of voiced speech at 16 kHz, embedded whole
    every hop (ECAPA)."""
    capacity: int = 0
    kind: str = WINDOWS
    samples: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    since_decision: int = 0

    def add(self, samples: np.ndarray, voice: int) -> np.ndarray | None:
        new = self.voiced_16k(samples, voice)
        if new is None:
            return None
        self.samples = np.concatenate((self.samples, new))[-self.capacity:]
        self.since_decision += len(new)
        if self.since_decision >= self.hop and len(self.samples) >= self.min_samples:
            self.since_decision = 0
            return self.samples
        return None

    def embedded(self, output: np.ndarray) -> np.ndarray:
        return output

    def clear(self) -> None:
        super().clear()
        self.samples = np.empty(0, np.float32)
        self.since_decision = 0


@dataclass
class Ge2eStream(_Turn):
    """GE2E partials at fixed positions of the voiced speech: partial k covers
    mel frames [k * step, k * step + 160), and a decision's embedding is the
    mean of the last `partials` partial embeddings, as resemblyzer's
    embed_utterance averages the partials of one window."""
    basis: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    step: int = 50      # mel frames between partials: one hop
    partials: int = 2   # partial embeddings averaged per decision
    kind: str = PARTIALS
    tail: np.ndarray = field(default_factory=lambda: np.zeros(GE2E_N_FFT // 2, np.float32))
    mel: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    energy: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    first_frame: int = 0  # stream index of mel[0] and energy[0]
    frames: int = 0       # mel frames computed since the turn began
    blocks: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))  # samples of the open energy block
    next_partial: int = 0  # stream frame where the next partial starts
    due_end: int = 0       # stream frame where the partial last handed out ends
    recent: deque[np.ndarray] = field(default_factory=deque)  # the last partials' embeddings

    def add(self, samples: np.ndarray, voice: int) -> np.ndarray | None:
        new = self.voiced_16k(samples, voice)
        if new is None:
            return None
        self._take(new)
        start = self.next_partial
        # The partial's last mel frame (centered) also needs 40 samples past
        # its 1.6 s: once it exists, so does the partial's energy.
        if self.frames < start + GE2E_PARTIAL_FRAMES:
            return None
        # One decision per frame at most: with a hop shorter than a frame
        # (10 mel frames), the partials a frame completed before the last
        # are skipped rather than left to pile up.
        while self.frames >= start + self.step + GE2E_PARTIAL_FRAMES:
            start += self.step
        self.next_partial = start + self.step
        self.due_end = start + GE2E_PARTIAL_FRAMES
        i = start - self.first_frame
        mel = self.mel[i:i + GE2E_PARTIAL_FRAMES] * partial_gain(self.energy[i:i + GE2E_PARTIAL_FRAMES])
        self._trim()
        return mel

    def embedded(self, output: np.ndarray) -> np.ndarray | None:
        self.recent.append(output)
        while len(self.recent) > self.partials:
            self.recent.popleft()
        # Every partial is embedded (later decisions average it), but none is
        # decided on before min_samples of speech.
        if self.due_end * GE2E_HOP < self.min_samples:
            return None
        return unit_rows(np.mean(np.stack(self.recent), axis=0, keepdims=True))[0]

    def clear(self) -> None:
        super().clear()
        self.tail = np.zeros(GE2E_N_FFT // 2, np.float32)
        self.mel = np.empty((0, len(self.basis)), np.float32)
        self.energy = np.empty(0, np.float64)
        self.blocks = np.empty(0, np.float32)
        self.first_frame = self.frames = self.next_partial = 0
        self.recent.clear()

    def _take(self, new: np.ndarray) -> None:
        """Mel frames and 10 ms energies of the new samples. Frame t is
        centered on sample t * 160 of the turn, zero before the turn began,
        as librosa's centered frames of one recording."""
        buf = np.concatenate((self.tail, new))
        n = (len(buf) - GE2E_N_FFT) // GE2E_HOP + 1 if len(buf) >= GE2E_N_FFT else 0
        if n > 0:
            mel = mel_of_frames(np.lib.stride_tricks.sliding_window_view(buf, GE2E_N_FFT)[::GE2E_HOP][:n],
                                self.basis)
            self.mel = np.concatenate((self.mel, mel)) if len(self.mel) else mel
            self.frames += n
            buf = buf[n * GE2E_HOP:]
        self.tail = buf
        # Energy per 160-sample block b (samples [b * 160, (b + 1) * 160) of the
        # turn): a partial's level is that of its own 1.6 s.
        blocks = np.concatenate((self.blocks, new))
        whole = len(blocks) // GE2E_HOP
        if whole:
            squares = np.square(blocks[:whole * GE2E_HOP].reshape(whole, GE2E_HOP), dtype=np.float64).sum(axis=1)
            self.energy = np.concatenate((self.energy, squares))
        self.blocks = blocks[whole * GE2E_HOP:]

    def _trim(self) -> None:
        """Keep only the frames from the next partial on."""
        drop = min(self.next_partial - self.first_frame, len(self.mel))
        if drop > 0:
            self.mel, self.energy = self.mel[drop:], self.energy[drop:]
            self.first_frame += drop


def partial_gain(energy: np.ndarray) -> float:
    """The power gain resemblyzer's level normalization applies to a partial's
    mel frames: quiet speech raised to -30 dBFS, never lowered (power mel
    scales with the square of the samples' gain)."""
    rms = float(np.sqrt(energy.sum() / (len(energy) * GE2E_HOP))) if len(energy) else 0.0
    if rms < 1e-6:
        return 1.0
    gain_db = GE2E_TARGET_DBFS - 20 * np.log10(rms)
    return 1.0 if gain_db <= 0 else float(10 ** (gain_db / 10))


def stream_for(encoder_name: str, sample_rate: int, window_seconds: float, hop_seconds: float,
               reset_seconds: float, min_seconds: float, basis: np.ndarray | None = None) -> SpeakerStream:
    """A fresh stream of encoder_name's input for an account at sample_rate."""
    hop = max(1, int(hop_seconds * SAMPLE_RATE))
    window = int(window_seconds * SAMPLE_RATE)
    min_samples = int(min(min_seconds, window_seconds) * SAMPLE_RATE)
    reset = max(0, int(reset_seconds * sample_rate))
    if encoder_name == "ge2e":
        assert basis is not None
        step = max(1, round(hop / GE2E_HOP))
        # As many partials as fit a window_seconds window at one per hop
        # (2 s, 0.5 s hops: 2 partials, 2.1 s of speech).
        partials = 1 + max(0, round((window / GE2E_HOP - GE2E_PARTIAL_FRAMES) / step))
        stream = Ge2eStream(sample_rate, hop, min_samples, reset, basis=basis, step=step, partials=partials)
        stream.clear()
        return stream
    return WindowStream(sample_rate, hop, min_samples, reset, capacity=window)


class StreamingEncoder(Protocol):
    name: str

    def embed_batch(self, windows: list[np.ndarray]) -> np.ndarray: ...


def encode(encoder: StreamingEncoder, kind: str, inputs: list[np.ndarray]) -> np.ndarray:
    """The encoder's outputs for stream inputs of one kind."""
    if kind == PARTIALS:
        return encoder.embed_partials(np.stack(inputs))  # type: ignore[attr-defined]
    return encoder.embed_batch(inputs)


def stream_embeddings(encoder: StreamingEncoder, vad: VadEngine, audio: Audio, window_seconds: float,
                      hop_seconds: float, min_seconds: float = 1.5, reset_seconds: float = 0.0) -> np.ndarray:
    """The embeddings a worker decides on while audio streams in 100 ms
    frames (one row per decision, in order): the worker's VAD and stream code."""
    vad_stream = VadStream(audio.sample_rate)
    stream = stream_for(encoder.name, audio.sample_rate, window_seconds, hop_seconds, reset_seconds, min_seconds,
                        getattr(encoder, "basis", None))
    frame = int(FRAME_SECONDS * audio.sample_rate)
    out = []
    for start in range(0, len(audio.samples) - frame + 1, frame):
        samples = audio.samples[start:start + frame]
        due = stream.add(samples, vad.process(vad_stream, samples).voice)
        if due is not None:
            embedding = stream.embedded(encode(encoder, stream.kind, [due])[0])
            if embedding is not None:
                out.append(embedding)
    return np.stack(out) if out else np.empty((0, 0), np.float32)
