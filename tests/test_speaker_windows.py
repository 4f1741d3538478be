"""The tracker's windows (worker/speakers/windows.py): when they come, what
they hold, 8 -> 16 kHz as a stream, and GE2E's streamed mel windows equal to
the same speech's mel computed in one go."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from speaker_helpers import MODELS
from worker.audio import Audio, decode_wav
from worker.speakers.ge2e_features import GE2E_HOP, GE2E_N_FFT, mel_spectrogram, normalize_level
from worker.speakers.graphs import Ge2eGraph
from worker.speakers.loader import load_onnx_encoder
from worker.speakers.windows import (
    FIRST_WINDOW_SECONDS,
    PAUSE_SECONDS,
    SURE_STEP_SECONDS,
    WINDOW_SECONDS,
    WINDOW_STEP_SECONDS,
    Ge2eWindows,
    SampleWindows,
    Upsampler,
    windows_for,
)
from worker.vad import SileroOnnx, VadEngine, VadParams, VadStream

FRAME = 1600  # 100 ms at 16 kHz


def speech(n: int = FRAME, seed: int = 2) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def graph() -> Ge2eGraph:
    loaded = load_onnx_encoder("ge2e", model_dir=MODELS)
    assert isinstance(loaded, Ge2eGraph), loaded
    return loaded


def test_the_upsampler_is_resample_poly_as_a_stream():
    x = (np.random.default_rng(1).standard_normal(8000) * 0.1).astype(np.float32)
    up = Upsampler()
    y = np.concatenate([up(x[i:i + 800]) for i in range(0, len(x), 800)])
    whole = resample_poly(x, 2, 1)
    assert len(y) == len(whole) - 20  # the filter's last 20 samples wait for the next frame
    assert np.abs(y - whole[:len(y)]).max() < 1e-6


def test_windows_take_only_8_or_16_khz():
    with pytest.raises(ValueError, match="8 or 16 kHz"):
        windows_for("ecapa", 11025)
    with pytest.raises(ValueError, match="mel basis"):
        windows_for("ge2e", 16000)


def test_a_window_comes_at_0_3_s_of_speech_then_every_0_2_s_holding_at_most_1_s():
    assert (FIRST_WINDOW_SECONDS, WINDOW_STEP_SECONDS, WINDOW_SECONDS) == (0.3, 0.2, 1.0)
    stream = windows_for("ecapa", 16000)
    assert isinstance(stream, SampleWindows)
    due = [stream.add(speech(seed=i), 1) for i in range(20)]
    frames = [i + 1 for i, w in enumerate(due) if w is not None]
    assert frames == [3, 5, 7, 9, 11, 13, 15, 17, 19]
    seconds = [w.seconds for w in due if w is not None]
    assert seconds == [0.3, 0.5, 0.7, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0]
    last = due[18]
    assert last is not None and len(last.input) == 16000
    # The window is the last second of the speech, as it came.
    assert np.array_equal(last.input, np.concatenate([speech(seed=i) for i in range(9, 19)]))


def test_unvoiced_frames_are_in_no_window_and_a_pause_restarts_them():
    stream = windows_for("ecapa", 16000)
    for i in range(12):
        stream.add(speech(seed=i), 1)
    # Two unvoiced frames (0.2 s) are not a pause: the run goes on.
    assert stream.add(np.zeros(FRAME, np.float32), 0) is None
    assert stream.add(np.zeros(FRAME, np.float32), 0) is None
    window = stream.add(speech(seed=50), 1)
    assert window is not None and window.seconds == 1.0
    assert not np.any(np.all(window.input.reshape(10, FRAME) == 0, axis=1))  # no silent frame in it
    # A pause of PAUSE_SECONDS: the next run's first window holds only the new speech.
    for _ in range(round(PAUSE_SECONDS * 10)):
        assert stream.add(np.zeros(FRAME, np.float32), 0) is None
    due = [stream.add(speech(seed=100 + i), 1) for i in range(3)]
    assert due[0] is None and due[1] is None and due[2] is not None
    assert np.array_equal(due[2].input, np.concatenate([speech(seed=100 + i) for i in range(3)]))


def test_a_frame_longer_than_a_step_hands_over_one_window():
    stream = windows_for("ecapa", 16000)
    due = [stream.add(speech(8000, seed=i), 1) for i in range(4)]  # 0.5 s frames
    assert [w.seconds if w is not None else None for w in due] == [0.5, 1.0, 1.0, 1.0]


def voiced_16k(vad: VadEngine, audio: Audio) -> list[np.ndarray]:
    """The voiced frames at 16 kHz, as the windows take them."""
    stream, up = VadStream(audio.sample_rate), Upsampler() if audio.sample_rate == 8000 else None
    n = audio.sample_rate // 10
    out = []
    for start in range(0, len(audio.samples) - n + 1, n):
        frame = audio.samples[start:start + n]
        voice = vad.process(stream, frame).voice
        out.append((frame, voice, (up(frame) if up is not None else frame) if voice else None))
    return out


@pytest.mark.parametrize("name,rate", [("speaker_1", 16000), ("speaker_2", 8000)])
def test_ge2e_windows_are_the_speechs_mel_in_one_go(graph, speakers_dir, name, rate):
    """Each window's mel frames equal those of the whole voiced speech computed
    at once (a reference of other code: librosa-style centered frames), raised
    by resemblyzer's level normalization of the window's own samples."""
    path = sorted((speakers_dir / name).glob("*.wav"))[0]
    audio = decode_wav(path.read_bytes(), max_seconds=600)
    if rate != audio.sample_rate:
        audio = Audio(resample_poly(audio.samples, rate, audio.sample_rate).astype(np.float32), rate)
    vad = VadEngine(SileroOnnx(), VadParams())
    stream = windows_for("ge2e", rate, graph.basis)
    assert isinstance(stream, Ge2eWindows)
    checked = 0
    voiced: list[np.ndarray] = []
    for frame, voice, at_16k in voiced_16k(vad, audio):
        window = stream.add(frame, voice)
        if at_16k is not None:
            voiced.append(at_16k)
        if window is None:
            continue
        if not voice or stream.voiced != sum(len(v) for v in voiced):
            continue  # only runs without a pause in this file's first part are compared
        signal = np.concatenate(voiced)
        n_frames = (len(signal) + GE2E_N_FFT // 2 - GE2E_N_FFT) // GE2E_HOP + 1
        mel = mel_spectrogram(signal, graph.basis)[:n_frames]
        frames = len(window.input)
        piece = signal[(n_frames - frames) * GE2E_HOP:n_frames * GE2E_HOP]
        loudest = int(np.argmax(np.abs(piece)))
        gain = float(normalize_level(piece)[loudest] / piece[loudest])
        expected = mel[n_frames - frames:] * gain ** 2
        assert np.allclose(window.input, expected, rtol=1e-4, atol=1e-7), f"window {checked} differs"
        checked += 1
    assert checked >= 5


def test_ge2e_windows_keep_only_a_second_of_mel_frames():
    stream = windows_for("ge2e", 16000, np.ones((40, 201), np.float32))
    assert isinstance(stream, Ge2eWindows)
    for i in range(100):
        stream.add(speech(seed=i), 1)
    assert len(stream.mel) <= 100 + 2 and len(stream.energy) <= 100 + 4


def test_while_the_decision_is_sure_windows_come_every_0_6_s():
    assert SURE_STEP_SECONDS == 0.6
    stream = windows_for("ecapa", 16000)
    # Sure from the start: the run's first second still every 0.2 s, then every 0.6 s.
    due = [stream.add(speech(seed=i), 1, sure=True) is not None for i in range(30)]
    assert [i + 1 for i, d in enumerate(due) if d] == [3, 5, 7, 9, 15, 21, 27]
    # No longer sure: the next window a normal step after the last.
    due = [stream.add(speech(seed=50 + i), 1, sure=False) is not None for i in range(4)]
    assert due == [True, False, True, False]  # frames 31 and 33: at once (0.4 s after 27), then 0.2 s after
