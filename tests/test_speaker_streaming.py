"""The speaker streams of worker/speakers/streaming.py: 8 -> 16 kHz as a
stream, and GE2E's cached partial embeddings equal to embedding the same
speech from scratch."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from speaker_helpers import MODELS
from worker.audio import Audio, decode_wav
from worker.speakers.encoders import unit_rows
from worker.speakers.ge2e_features import GE2E_HOP, GE2E_N_FFT, GE2E_PARTIAL_FRAMES, mel_spectrogram, normalize_level
from worker.speakers.graphs import Ge2eGraph
from worker.speakers.loader import load_onnx_encoder
from worker.speakers.streaming import (
    FRAME_SECONDS,
    Ge2eStream,
    Upsampler,
    WindowStream,
    stream_embeddings,
    stream_for,
)
from worker.speakers.tracker import MIN_WINDOW_SECONDS
from worker.vad import SileroOnnx, VadEngine, VadParams, VadStream


@pytest.fixture(scope="module")
def graph() -> Ge2eGraph:
    loaded = load_onnx_encoder("ge2e", model_dir=MODELS)
    assert isinstance(loaded, Ge2eGraph), loaded
    return loaded


@pytest.fixture(scope="module")
def vad() -> VadEngine:
    return VadEngine(SileroOnnx(), VadParams())


def test_the_upsampler_is_resample_poly_as_a_stream():
    x = (np.random.default_rng(1).standard_normal(8000) * 0.1).astype(np.float32)
    up = Upsampler()
    y = np.concatenate([up(x[i:i + 800]) for i in range(0, len(x), 800)])
    whole = resample_poly(x, 2, 1)
    assert len(y) == len(whole) - 20  # the filter's last 20 samples wait for the next frame
    assert np.abs(y - whole[:len(y)]).max() < 1e-6


def test_speaker_streams_take_only_8_or_16_khz():
    with pytest.raises(ValueError, match="8 or 16 kHz"):
        stream_for("ecapa", 11025, 2.0, 0.5, 3.0, 1.5)


def reference(graph: Ge2eGraph, vad: VadEngine, audio: Audio, stream: Ge2eStream) -> np.ndarray:
    """The decisions' embeddings computed from scratch: the voiced speech at
    16 kHz in one piece, its mel in one go, every partial through the LSTM
    alone, no cache."""
    vad_stream, up = VadStream(audio.sample_rate), Upsampler() if audio.sample_rate == 8000 else None
    frame = int(FRAME_SECONDS * audio.sample_rate)
    voiced = []
    for start in range(0, len(audio.samples) - frame + 1, frame):
        samples = audio.samples[start:start + frame]
        if vad.process(vad_stream, samples).voice:
            voiced.append(up(samples) if up is not None else samples)
    speech = np.concatenate(voiced)
    # Centered frames (200 zeros before the speech): those whose 25 ms are all there.
    n_frames = (len(speech) + GE2E_N_FFT // 2 - GE2E_N_FFT) // GE2E_HOP + 1
    mel = mel_spectrogram(speech, graph.basis)[:n_frames]
    out, partials = [], []
    for start in range(0, n_frames - GE2E_PARTIAL_FRAMES + 1, stream.step):
        piece = speech[start * GE2E_HOP:(start + GE2E_PARTIAL_FRAMES) * GE2E_HOP]
        # resemblyzer's level normalization of the partial's own samples:
        # its gain squared scales the power mel.
        loudest = int(np.argmax(np.abs(piece)))
        gain = float(normalize_level(piece)[loudest] / piece[loudest])
        mels = mel[start:start + GE2E_PARTIAL_FRAMES] * gain ** 2
        partials.append(graph.embed_partials(mels[None])[0])
        if (start + GE2E_PARTIAL_FRAMES) * GE2E_HOP >= stream.min_samples:
            out.append(unit_rows(np.mean(partials[-stream.partials:], axis=0, keepdims=True))[0])
    return np.stack(out)


@pytest.mark.parametrize("name,rate", [("speaker_1", 16000), ("speaker_2", 8000)])
def test_cached_partials_equal_embedding_from_scratch(graph, vad, speakers_dir, name, rate):
    path = sorted((speakers_dir / name).glob("*.wav"))[0]
    audio = decode_wav(path.read_bytes(), max_seconds=600)
    if rate != audio.sample_rate:
        audio = Audio(resample_poly(audio.samples, rate, audio.sample_rate).astype(np.float32), rate)
    streamed = stream_embeddings(graph, vad, audio, window_seconds=2.0, hop_seconds=0.5)
    stream = stream_for("ge2e", rate, 2.0, 0.5, 0.0, 1.5, graph.basis)
    assert isinstance(stream, Ge2eStream) and (stream.step, stream.partials) == (50, 2)
    expected = reference(graph, vad, audio, stream)
    assert len(streamed) == len(expected) > 5
    assert np.abs(streamed - expected).max() < 1e-5


def test_a_ge2e_stream_decides_once_per_hop_and_forgets_its_turn_after_a_silence():
    stream = stream_for("ge2e", 16000, 2.0, 0.5, 1.0, 1.5, np.ones((40, 201), np.float32))
    speech = (np.random.default_rng(2).standard_normal(1600) * 0.1).astype(np.float32)
    due = [stream.add(speech, 1) is not None for _ in range(30)]
    # The first partial ends after 1.6 s of speech (and the 25 ms of its last
    # mel frame), then one every 0.5 s.
    assert [i for i, d in enumerate(due) if d] == [16, 21, 26]
    for _ in range(10):
        assert stream.add(np.zeros(1600, np.float32), 0) is None
    assert isinstance(stream, Ge2eStream) and stream.frames == 0 and len(stream.recent) == 0


def test_a_window_stream_keeps_the_last_window_at_16_khz():
    stream = stream_for("ecapa", 8000, 2.0, 0.5, 0.0, 1.5)
    assert isinstance(stream, WindowStream)
    due = [stream.add(np.full(800, 0.1, np.float32), 1) for _ in range(30)]
    sizes = [len(d) for d in due if d is not None]
    assert sizes[0] >= 1.5 * 16000 and max(sizes) == 2 * 16000


def frame(level: float = 0.1) -> np.ndarray:
    return np.full(1600, level, np.float32)


def test_a_window_decides_every_hop_once_it_holds_enough_speech():
    stream = stream_for("ecapa", 16000, 2.0, 0.5, 3.0, MIN_WINDOW_SECONDS)
    due = [stream.add(frame(), voice=1) is not None for _ in range(30)]
    # First decision at MIN_WINDOW_SECONDS (2 s) of speech, then one per 0.5 s.
    assert MIN_WINDOW_SECONDS == 2.0
    assert [i + 1 for i, d in enumerate(due) if d] == [20, 25, 30]
    assert isinstance(stream, WindowStream) and len(stream.samples) == 32000  # never more than the window


def test_unvoiced_frames_do_not_fill_the_window_and_a_long_silence_resets_it():
    stream = stream_for("ecapa", 16000, 2.0, 0.5, 3.0, MIN_WINDOW_SECONDS)
    assert isinstance(stream, WindowStream)
    for _ in range(15):
        stream.add(frame(), voice=1)
    stream.decided("alice", 0.8)
    for _ in range(29):
        assert stream.add(frame(0.0), voice=0) is None
    assert stream.speaker == "alice" and len(stream.samples) == 24000  # 2.9 s of silence: same turn
    stream.add(frame(0.0), voice=0)
    assert stream.speaker is None and len(stream.samples) == 0  # 3 s: a new turn starts clean


def test_the_first_decision_waits_for_the_configured_speech():
    from worker.config import parse_args
    assert parse_args([]).first_decision_seconds == MIN_WINDOW_SECONDS
    first = parse_args(["--first-decision-seconds", "3"]).first_decision_seconds
    stream = stream_for("ecapa", 16000, 4.0, 0.5, 3.0, first)
    due = [stream.add(frame(), voice=1) is not None for _ in range(40)]
    assert [i + 1 for i, d in enumerate(due) if d] == [30, 35, 40]
    for flag in ("--first-decision-seconds", "--speaker-reset-seconds"):
        for value in ("-1", "nan"):
            with pytest.raises(SystemExit):
                parse_args([flag, value])


def test_a_hop_shorter_than_a_frame_decides_once_per_frame_and_keeps_little():
    stream = stream_for("ge2e", 16000, 2.0, 0.01, 0.0, 1.6, np.ones((40, 201), np.float32))
    assert isinstance(stream, Ge2eStream) and stream.step == 1
    due = [stream.add(frame(), 1) for _ in range(100)]
    assert all(d is not None for d in due[16:]) and all(d is None for d in due[:16])
    assert len(stream.mel) <= GE2E_PARTIAL_FRAMES + 10  # not 10 s of mel frames


@pytest.mark.parametrize("flag", ["--window-seconds", "--hop-seconds"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_window_or_hop_must_be_a_positive_duration(flag, value, capsys):
    from worker.config import parse_args
    with pytest.raises(SystemExit):
        parse_args([flag, value])
    assert "a duration in seconds above 0" in capsys.readouterr().err
