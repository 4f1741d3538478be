"""An account's speech as its speaker encoder sees it while it streams: short
windows of the voiced audio, one every WINDOW_STEP_SECONDS of speech.

A window holds the last WINDOW_SECONDS of voiced speech, or less right after
the speech started: after a pause of PAUSE_SECONDS a new run of speech may be
another voice, so windows restart there and grow from FIRST_WINDOW_SECONDS
instead of mixing the voice before the pause into the one after it. Frames
without voice are not part of any window.

What a window hands the encoder depends on the encoder:
- GE2E (``Ge2eWindows``): the window's mel frames, raised to -30 dBFS on the
  window's own energy (the level normalization resemblyzer applies to an
  utterance). Mel frames are computed once, as the samples arrive, on the
  voiced audio as one continuous signal.
- ECAPA (``SampleWindows``): the window's 16 kHz samples (its graph computes
  its own features and normalizes over the window).

8 kHz frames go to 16 kHz through scipy's resample_poly filter run as a
stream (Upsampler): the same samples, 20 later.

The lengths were measured with the tracker's model on the conversation
benchmark, the recorded conversation and leave one speaker out (final-label
IER, IER, identified / stranger unknown; an earlier beta of 30): 1 s windows
every 0.2 s 10.7%, 8.0%, 95.2% / 85.9%; every 0.3 s 11.4%, 8.2%, 94.5% / 82.9%
for two thirds of the encoder's work; 0.8 s windows every 0.2 s 13.6%, 9.9%,
95.9% / 78.3%. A window every 0.1 s instead of 0.2 s (twice the work) moved
them by at most 0.2 points.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.signal import firwin, upfirdn

from .encoders import SAMPLE_RATE
from .ge2e_features import GE2E_HOP, GE2E_N_FFT, GE2E_TARGET_DBFS, mel_of_frames

WINDOW_SECONDS = 1.0
WINDOW_STEP_SECONDS = 0.2
# While the account's decision is sure (its latest window left the posterior
# at tracker.SURE or more: tracker.is_sure) and the run already holds a full
# window, a window every 0.6 s is enough; a window that leaves the decision
# unsure (a change of speaker) brings them back to every 0.2 s. Measured with
# the decision as the latest window left it, over the conversations (seed 0,
# immediate / final IER), the held-out seed 1, the recorded conversation and
# leave one out (final: identified / unknown), with windows per voiced frame
# (leave one out):
#   0.4 s:  11.8 / 8.8%, -, 28.5 / 8.0%, 96.3 / 86.6%, 0.313
#   0.5 s:  12.1 / 8.7%, 15.8 / 9.5%, 30.9 / 10.9%, 96.2 / 86.7%, 0.282
#   0.6 s:  11.7 / 8.1%, 16.2 / 9.9%, 24.8 / 5.0%, 96.4 / 86.8%, 0.258
#   0.8 s:  12.6 / 8.5%, -, 29.7 / 13.6%, 95.8 / 87.6%, 0.231
# against 0.4 s with the posterior as it drifted since the window (which fell
# under SURE two frames later, so windows never came more than 0.4 s apart):
# 11.4 / 8.6%, 15.4 / 8.8%, 27.2 / 5.0%, 95.6 / 86.1%, 0.326. So 0.6 s: a
# fifth fewer windows (speaker mode, 20 streams, alternating in one sitting:
# 6.8 and 7.0 ms of CPU per frame, against 7.8 and 7.8 at 0.4 s as it
# drifted, and 7.0 and 7.2 for the 1.6 s partials every 0.5 s before the
# tracker), within a point on every figure but seed 1's (+0.8 / +1.1). The
# recorded conversation has 16 s of speech: a point of it is 1.6 frames, so
# its swings between steps are noise.
SURE_STEP_SECONDS = 0.6
FIRST_WINDOW_SECONDS = 0.3
PAUSE_SECONDS = 0.3
MELS, WAVS = "mels", "wavs"  # what a window stream hands its encoder (engine.py)

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


@dataclass(frozen=True, slots=True)
class Window:
    """What the encoder embeds for one observation, and the seconds of speech it covers."""
    input: np.ndarray
    seconds: float


class SpeakerWindows(Protocol):
    """One account's window stream at one sample rate (Account.speech's windows)."""
    sample_rate: int
    kind: str  # MELS or WAVS: which encoder call takes its windows
    voiced: int  # voiced samples (16 kHz) of the current run of speech
    run: int     # runs of speech begun after a pause

    def add(self, samples: np.ndarray, voice: int, sure: bool = False) -> Window | None:
        """Take one frame at the stream's rate; the window to embed when one
        is due (sure: the account's decision is sure, windows may come less
        often)."""


def window_due(voiced: int, last: int, sure: bool = False) -> bool:
    """Whether a window is due at a frame after which the run holds voiced
    samples (16 kHz), its last window having been at last (0: none yet): the
    run's first at FIRST_WINDOW_SECONDS of speech, then one every
    WINDOW_STEP_SECONDS, or every SURE_STEP_SECONDS while the decision is sure
    and the run holds a full window. At most one per frame (a frame longer
    than a step hands over the latest window only)."""
    if voiced < round(FIRST_WINDOW_SECONDS * SAMPLE_RATE):
        return False
    if not last:
        return True
    step = SURE_STEP_SECONDS if sure and voiced >= round(WINDOW_SECONDS * SAMPLE_RATE) else WINDOW_STEP_SECONDS
    return voiced - last >= round(step * SAMPLE_RATE)


@dataclass
class _Runs:
    """What every window stream counts: voiced speech since the run began,
    and the silence that ends a run. every_frame: a window at every voiced
    frame from FIRST_WINDOW_SECONDS of a run on, whatever window_due says (a
    recording's windows, from which track_recording picks those a stream
    would get)."""
    sample_rate: int
    every_frame: bool = False
    voiced: int = 0         # voiced samples (16 kHz) of the current run
    last: int = 0           # voiced samples of the run at its last window (0: none yet)
    silence: int = 0        # unvoiced samples (stream rate) since the last voiced frame
    run: int = 0            # runs of speech begun after a pause
    upsampler: Upsampler | None = None

    def __post_init__(self) -> None:
        self.upsampler = to_16k_stream(self.sample_rate)

    def voiced_16k(self, samples: np.ndarray, voice: int) -> np.ndarray | None:
        """The frame at 16 kHz when it is voiced; counts silence otherwise.
        A voiced frame after a pause begins a new run."""
        if not voice:
            self.silence += len(samples)
            return None
        if self.silence >= PAUSE_SECONDS * self.sample_rate:
            self.voiced, self.last, self.run = 0, 0, self.run + 1
        self.silence = 0
        return self.upsampler(samples) if self.upsampler is not None else samples

    def due_length(self, new: int, sure: bool = False) -> int:
        """Samples (16 kHz) of the window due after new voiced samples (window_due), or 0."""
        self.voiced += new
        if not window_due(self.voiced, 0 if self.every_frame else self.last, sure):
            return 0
        self.last = self.voiced
        return min(self.voiced, round(WINDOW_SECONDS * SAMPLE_RATE))


@dataclass
class SampleWindows(_Runs):
    """The window as 16 kHz samples (ECAPA)."""
    kind: str = WAVS
    samples: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))

    def add(self, samples: np.ndarray, voice: int, sure: bool = False) -> Window | None:
        new = self.voiced_16k(samples, voice)
        if new is None:
            return None
        if self.voiced == 0:
            self.samples = np.empty(0, np.float32)
        self.samples = np.concatenate((self.samples, new))[-round(WINDOW_SECONDS * SAMPLE_RATE):]
        length = self.due_length(len(new), sure)
        return Window(self.samples[-length:], length / SAMPLE_RATE) if length else None


@dataclass
class Ge2eWindows(_Runs):
    """The window as GE2E's mel frames: frame t is centered on sample t * 160
    of the voiced audio (zero before it began), as librosa's centered frames of
    one recording; its energy is that of samples [t * 160, (t + 1) * 160)."""
    basis: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    kind: str = MELS
    tail: np.ndarray = field(default_factory=lambda: np.zeros(GE2E_N_FFT // 2, np.float32))
    mel: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    energy: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    block: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))  # samples of the open energy block
    mel_start: int = 0     # frame index of mel[0]
    energy_start: int = 0  # block index of energy[0]

    def add(self, samples: np.ndarray, voice: int, sure: bool = False) -> Window | None:
        new = self.voiced_16k(samples, voice)
        if new is None:
            return None
        self._take(new)
        length = self.due_length(len(new), sure)
        if not length:
            return None
        # The newest mel frame also needs 40 samples past the frame's end: a
        # window ends with the newest frame there is.
        frames = min(length // GE2E_HOP, len(self.mel))
        first = self.mel_start + len(self.mel) - frames
        energy = self.energy[first - self.energy_start:first - self.energy_start + frames]
        return Window(self.mel[-frames:] * window_gain(energy), frames * GE2E_HOP / SAMPLE_RATE)

    def _take(self, new: np.ndarray) -> None:
        """Mel frames and 10 ms energies of the new samples; only what a
        window can still use is kept."""
        keep = round(WINDOW_SECONDS * SAMPLE_RATE) // GE2E_HOP + 2
        buf = np.concatenate((self.tail, new))
        n = (len(buf) - GE2E_N_FFT) // GE2E_HOP + 1 if len(buf) >= GE2E_N_FFT else 0
        if n > 0:
            # as_strided: the frames as views of buf (sliding_window_view's checks
            # were a third of this function's time).
            frames = np.lib.stride_tricks.as_strided(buf, shape=(n, GE2E_N_FFT),
                                                     strides=(GE2E_HOP * buf.strides[0], buf.strides[0]),
                                                     writeable=False)
            mel = mel_of_frames(frames, self.basis)
            self.mel = np.concatenate((self.mel, mel)) if len(self.mel) else mel
            buf = buf[n * GE2E_HOP:]
        self.tail = buf
        blocks = np.concatenate((self.block, new))
        whole = len(blocks) // GE2E_HOP
        if whole:
            squares = np.square(blocks[:whole * GE2E_HOP].reshape(whole, GE2E_HOP), dtype=np.float64).sum(axis=1)
            self.energy = np.concatenate((self.energy, squares))
        self.block = blocks[whole * GE2E_HOP:]
        if len(self.mel) > keep:
            self.mel_start += len(self.mel) - keep
            self.mel = self.mel[-keep:]
        if len(self.energy) > keep + 2:
            self.energy_start += len(self.energy) - keep - 2
            self.energy = self.energy[-keep - 2:]


def window_gain(energy: np.ndarray) -> float:
    """The power gain resemblyzer's level normalization applies to a window's
    mel frames: quiet speech raised to -30 dBFS, never lowered (power mel
    scales with the square of the samples' gain)."""
    rms = float(np.sqrt(energy.sum() / (len(energy) * GE2E_HOP))) if len(energy) else 0.0
    if rms < 1e-6:
        return 1.0
    gain_db = GE2E_TARGET_DBFS - 20 * np.log10(rms)
    return 1.0 if gain_db <= 0 else float(10 ** (gain_db / 10))


def window_kind(encoder_name: str) -> str:
    """What encoder_name's windows hand the encoder: MELS or WAVS (windows_for's kind)."""
    return MELS if encoder_name == "ge2e" else WAVS


def windows_for(encoder_name: str, sample_rate: int, basis: np.ndarray | None = None,
                every_frame: bool = False) -> SpeakerWindows:
    """A fresh window stream of encoder_name's input for an account at
    sample_rate (every_frame: a recording's every window, _Runs)."""
    if encoder_name == "ge2e":
        if basis is None:
            raise ValueError("GE2E windows need the encoder's mel basis")
        stream = Ge2eWindows(sample_rate, every_frame, basis=basis)
        stream.mel = np.empty((0, len(basis)), np.float32)
        return stream
    return SampleWindows(sample_rate, every_frame)
