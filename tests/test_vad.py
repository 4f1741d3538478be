"""Streaming VAD: frames vs whole file, silero's own wrapper as the oracle,
and accounts interleaved through one engine."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile as sf

from worker.vad import CHUNK_SAMPLES, SileroOnnx, VadEngine, VadParams, VadStream


@pytest.fixture(scope="module")
def engine():
    return VadEngine(SileroOnnx(), VadParams())


def read(path) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(path, dtype="float32")
    return samples, rate


def stream_in_frames(engine: VadEngine, samples: np.ndarray, rate: int, frame_ms: int = 100):
    stream, probs, voices = VadStream(rate), [], []
    step = rate * frame_ms // 1000
    for start in range(0, len(samples), step):
        result = engine.process(stream, samples[start:start + step])
        probs.extend(result.chunk_probs)
        voices.append(result.voice)
    return np.array(probs), voices


@pytest.mark.parametrize("name", ["en_example.wav", "sample1.wav"])
def test_frames_give_the_same_decisions_as_the_whole_file(engine, speech, name):
    samples, rate = read(speech(name))
    whole = engine.process(VadStream(rate), samples)
    framed_probs, _ = stream_in_frames(engine, samples, rate)
    odd_probs, _ = stream_in_frames(engine, samples, rate, frame_ms=37)  # frames that never align with chunks
    assert len(whole.chunk_probs) == len(samples) // CHUNK_SAMPLES[rate]
    np.testing.assert_array_equal(framed_probs, whole.chunk_probs)
    np.testing.assert_array_equal(odd_probs, whole.chunk_probs)
    # and the hysteresis decisions per chunk agree too
    a, b = VadStream(rate), VadStream(rate)
    params = VadParams()
    assert [a.decide(np.array([p]), params)[0] for p in whole.chunk_probs] == \
           [b.decide(np.array([p]), params)[0] for p in framed_probs]


@pytest.mark.parametrize("name", ["en_example.wav", "sample2.wav"])
def test_matches_silero_reference_wrapper_and_vaditerator(engine, speech, name):
    """silero's own OnnxWrapper + VADIterator, fed chunk by chunk, is the oracle."""
    torch = pytest.importorskip("torch")
    silero_vad = pytest.importorskip("silero_vad")  # the official package (pip install '.[dev]')

    samples, rate = read(speech(name))
    n = CHUNK_SAMPLES[rate]
    model = silero_vad.load_silero_vad(onnx=True)
    iterator = silero_vad.VADIterator(model, threshold=0.5, sampling_rate=rate, min_silence_duration_ms=100)
    chunks = [torch.from_numpy(samples[i:i + n]) for i in range(0, len(samples) - n + 1, n)]
    ref_probs = [model(chunk, rate).item() for chunk in chunks]
    model.reset_states()
    ref_triggered = []
    for chunk in chunks:  # VADIterator runs the same model again, from a fresh state
        iterator(chunk)
        ref_triggered.append(int(iterator.triggered))

    framed_probs, _ = stream_in_frames(engine, samples, rate)
    np.testing.assert_allclose(framed_probs, ref_probs, atol=1e-5)
    ours, params = VadStream(rate), VadParams(threshold=0.5, min_silence_ms=100)
    assert [ours.decide(np.array([p]), params)[0] for p in framed_probs] == ref_triggered


def ten_seconds_each(speech) -> list[tuple[np.ndarray, int]]:
    files = [read(speech("en_example.wav")), read(speech("sample1.wav")), read(speech("sample3.wav"))]
    return [(s[: r * 10], r) for s, r in files]


def test_interleaved_accounts_batched_together_match_their_solo_runs(engine, speech):
    """Frames of several accounts (8 and 16 kHz) go through the model as one
    batch; each account's results equal what it gets alone."""
    files = ten_seconds_each(speech)
    alone = [stream_in_frames(engine, s, r)[0] for s, r in files]
    streams = [VadStream(r) for _, r in files]
    together: list[list[float]] = [[] for _ in files]
    for k in range(max(len(s) // (r // 10) + 1 for s, r in files)):
        batch = [(i, s[k * (r // 10):(k + 1) * (r // 10)]) for i, (s, r) in enumerate(files)]
        batch = [(i, frame) for i, frame in batch if len(frame)]
        results = engine.process_many([(streams[i], frame) for i, frame in batch])
        for (i, _), result in zip(batch, results, strict=True):
            together[i].extend(result.chunk_probs)
    for i in range(len(files)):
        np.testing.assert_allclose(together[i], alone[i], atol=1e-5)


def test_threads_sharing_the_model_do_not_disturb_each_other(engine, speech):
    """Request threads call the one onnxruntime session at the same time, each
    with its own account's state."""
    files = ten_seconds_each(speech) * 2
    alone = [stream_in_frames(engine, s, r)[0] for s, r in files[:3]]
    together: list[np.ndarray] = [None] * len(files)  # type: ignore[list-item]
    barrier = threading.Barrier(len(files))

    def run(i: int) -> None:
        barrier.wait()
        together[i] = stream_in_frames(engine, *files[i])[0]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(files))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(len(files)):
        np.testing.assert_array_equal(together[i], alone[i % 3])


def test_silence_is_not_voice_and_speech_is(engine, speech):
    samples, rate = read(speech("en_example.wav"))
    silence = np.zeros(rate * 2, np.float32)
    _, voices = stream_in_frames(engine, np.concatenate([silence, samples[: rate * 10]]), rate)
    assert voices[:20] == [0] * 20
    assert sum(voices[20:]) / len(voices[20:]) > 0.6


def test_sample_rate_change_restarts_the_stream():
    from worker.accounts import Account
    account = Account("a")
    first = account.vad_stream(16000)
    assert account.vad_stream(16000) is first
    assert account.vad_stream(8000) is not first and account.vad.sample_rate == 8000


def chunk_by_chunk(probs: list[float], params: VadParams, rate: int = 16000) -> list[int]:
    stream = VadStream(rate)
    return [stream.decide(np.array([p], np.float32), params)[0] for p in probs]


def test_default_decision_is_the_hysteresis_band_alone():
    """threshold 0.3 turns voice on, the first chunk under 0.15 turns it off."""
    assert chunk_by_chunk([0.1, 0.31, 0.2, 0.16, 0.14, 0.2, 0.29, 0.3], VadParams()) == [0, 1, 1, 1, 0, 0, 0, 1]


def test_speech_pad_holds_voice_after_speech_ends():
    probs = [0.9] * 3 + [0.0] * 8
    assert chunk_by_chunk(probs, VadParams()) == [1, 1, 1] + [0] * 8
    # 100 ms at 32 ms a chunk: the chunk that ended speech and three more
    assert chunk_by_chunk(probs, VadParams(speech_pad_ms=100)) == [1] * 7 + [0] * 4
    # a pad counts from where voice would have turned off (after min_silence_ms)
    assert chunk_by_chunk(probs, VadParams(min_silence_ms=64, speech_pad_ms=32)) == [1] * 6 + [0] * 5


def test_min_speech_turns_voice_on_only_for_runs_that_last():
    probs = [0.9] * 2 + [0.0] * 3 + [0.9] * 6 + [0.0] * 2
    # 150 ms: a run is voiced from its fifth chunk (160 ms); the 64 ms run never
    assert chunk_by_chunk(probs, VadParams(min_speech_ms=150)) == [0] * 9 + [1, 1, 0, 0]
    # a run too short for min_speech gets no pad either
    assert chunk_by_chunk(probs, VadParams(min_speech_ms=150, speech_pad_ms=64)) == [0] * 9 + [1, 1, 1, 1]


def test_a_frame_is_voiced_when_voice_was_on_at_any_of_its_chunks():
    stream, params = VadStream(16000), VadParams()
    assert stream.decide(np.array([0.0, 0.9, 0.0], np.float32), params)[0] == 1
    assert stream.decide(np.array([0.0, 0.0, 0.0], np.float32), params)[0] == 0
    assert stream.decide(np.empty(0, np.float32), params)[0] == 0  # no whole chunk yet: as the last one left it


def test_worker_defaults_are_vadparams_defaults_and_bad_values_are_named(capsys):
    from worker.config import parse_args
    assert VadParams.from_config(parse_args([], environ={})) == VadParams()
    assert VadParams.from_config(parse_args(["--vad-threshold", "0.5", "--vad-min-silence-ms", "100"],
                                            environ={})) == VadParams(0.5, 100)
    for argv, message in [(["--vad-threshold", "1.5"], "a speech probability is in (0, 1], got '1.5'"),
                          (["--vad-threshold", "0"], "a speech probability is in (0, 1], got '0'"),
                          (["--vad-speech-pad-ms", "-1"], "a duration in ms is 0 or more, got '-1'")]:
        with pytest.raises(SystemExit):
            parse_args(argv, environ={})
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([], environ={"VAD_MIN_SPEECH_MS": "soon"})
    assert "VAD_MIN_SPEECH_MS is not valid for --vad-min-speech-ms" in capsys.readouterr().err
