"""voicetools.vad_noise (voicestream-vad-noise): mixing at a set SNR, the
energy reference, boundary exclusion, F1 and onsets on tiny signals; then a
small slice of the real benchmark, whose system column must be exactly what a
worker answers for the same WAV frames."""
from __future__ import annotations

import json

import numpy as np
import pytest

from voicestream.wav import encode_wav
from voicetools.vad_noise import detectors
from voicetools.vad_noise.labels import (
    SEGMENTS_PER_FRAME,
    active_segments,
    frame_labels,
    onsets,
    sample_mask,
    scored_frames,
)
from voicetools.vad_noise.mixing import achieved_snr, as_pcm16, babble, mix, power, resample, white
from voicetools.vad_noise.run import BEFORE, Condition, load, main, run, signals_at, system_params, variant
from voicetools.vad_noise.scoring import Counts, count, onset_delays
from worker.accounts import Accounts
from worker.audio import decode_wav
from worker.config import parse_args
from worker.pipeline import Frame, FramePipeline
from worker.storage.framelog import FrameLog
from worker.vad import CHUNK_SAMPLES, SileroOnnx, VadEngine, VadParams, VadStream

RATE = 8000


def tone(seconds: float, rate: int = RATE, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def hush(seconds: float, rate: int = RATE) -> np.ndarray:
    """Near silence: a quiet noise floor (-80 dBFS), as a recording has."""
    return white(int(seconds * rate), seed=1) * 1e-4


def bursts(*parts: tuple[str, float]) -> np.ndarray:
    return np.concatenate([tone(s) if kind == "tone" else hush(s) for kind, s in parts])


@pytest.mark.parametrize("snr", [20, 10, 5, 0])
@pytest.mark.parametrize("noise", ["white", "babble"])
def test_mixes_reach_the_snr_over_the_speech_part(noise, snr):
    speech = bursts(("hush", 1), ("tone", 1), ("hush", 1))
    active = sample_mask(active_segments(speech, RATE), RATE, len(speech))
    if noise == "white":
        n = white(len(speech), seed=3)
    else:
        n = babble([tone(0.7, level=0.1), tone(1.3, level=0.5), white(RATE, seed=4)], len(speech), seed=5)
    mixed = mix(speech, active, n, snr)
    assert achieved_snr(speech, active, mixed) == pytest.approx(snr, abs=1e-3)
    # over the whole file (a third of it speech) the same noise is 10 log10(3) dB "louder"
    whole = 10 * np.log10(power(speech) / power(mixed - speech))
    assert whole == pytest.approx(snr - 10 * np.log10(3), abs=0.1)


def test_babble_is_seeded_and_never_shorter_than_asked():
    sources = [tone(0.3), white(RATE // 2, seed=9)]
    a, b = babble(sources, 12345, seed=1), babble(sources, 12345, seed=1)
    assert len(a) == 12345 and np.array_equal(a, b)
    assert not np.array_equal(a, babble(sources, 12345, seed=2))
    with pytest.raises(ValueError, match="at least one source"):
        babble([], 10, seed=1)


def test_mix_names_what_does_not_fit():
    with pytest.raises(ValueError, match="lengths differ"):
        mix(np.zeros(10, np.float32), np.ones(10, bool), np.zeros(9, np.float32), 5)
    with pytest.raises(ValueError, match="no active samples"):
        mix(np.zeros(10, np.float32), np.zeros(10, bool), np.ones(10, np.float32), 5)


def test_pcm16_keeps_the_snr_when_it_scales_a_loud_mix_down():
    loud = tone(1, level=3.0)
    out = as_pcm16(loud)
    assert np.max(np.abs(out)) <= 0.99 and np.allclose(out, loud * 0.99 / 3.0, atol=1 / 32768)
    assert np.array_equal(as_pcm16(out), out)  # already PCM 16: unchanged


def test_resampling_both_ways_keeps_length_in_time():
    assert len(resample(tone(1.0, 16000), 16000, 8000)) == 8000
    assert len(resample(tone(1.0), 8000, 16000)) == 16000


def test_reference_marks_the_tone_bridges_short_gaps_and_drops_clicks():
    # 0.5 s hush, 0.6 s tone, 0.15 s gap (bridged), 0.4 s tone, 0.5 s hush,
    # a 30 ms click (dropped), 0.5 s hush
    signal = bursts(("hush", 0.5), ("tone", 0.6), ("hush", 0.15), ("tone", 0.4), ("hush", 0.5),
                    ("tone", 0.03), ("hush", 0.5))
    active = active_segments(signal, RATE)
    expected = np.zeros(len(active), bool)
    expected[50:165] = True  # 0.5 s .. 1.65 s, the gap included
    assert np.array_equal(active, expected)
    # and a wider gap (0.3 s) is a pause
    gap = active_segments(bursts(("hush", 0.5), ("tone", 0.5), ("hush", 0.3), ("tone", 0.5), ("hush", 0.5)), RATE)
    assert not gap[105:125].any() and gap[50:100].all() and gap[130:180].all()


def test_silence_or_a_flat_signal_has_no_speech():
    assert not active_segments(hush(2), RATE).any()
    assert not active_segments(tone(2), RATE).any()


def test_frames_are_speech_when_half_covered_and_transitions_are_excluded():
    active = np.zeros(10 * SEGMENTS_PER_FRAME, bool)
    active[25:75] = True  # frames 2 (half), 3-6 (whole), 7 (half)
    labels = frame_labels(active)
    assert labels.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    scored = scored_frames(labels)
    # changes between frames 1|2 and 7|8: frames 1, 2, 7 and 8 are not scored
    assert scored.tolist() == [True, False, False, True, True, True, True, False, False, True]
    assert scored_frames(labels, collar=2).tolist() == [False] * 4 + [True, True] + [False] * 4
    assert onsets(labels) == [(2, 8)]
    assert onsets(np.array([1, 1, 0, 1])) == [(3, 4)]  # speech at the start has no onset to time


def test_f1_counts_only_scored_frames():
    labels = np.array([0, 0, 1, 1, 1, 1, 0, 0, 0, 0])
    voiced = np.array([1, 0, 0, 1, 0, 1, 1, 0, 1, 0])
    scored = scored_frames(labels)  # frames 1, 2, 5, 6 excluded
    c = count(labels, voiced, scored)
    assert c == Counts(tp=1, fp=2, fn=1, tn=2)
    assert (c.precision, c.recall, c.f1) == pytest.approx((1 / 3, 1 / 2, 2 / 5))
    assert Counts().f1 == 0.0 and (c + c).f1 == c.f1
    with pytest.raises(ValueError, match="differ in length"):
        count(labels, voiced[:-1], scored)


def test_onset_delay_from_the_reference_onset_to_the_first_voiced_frame():
    labels = np.array([0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0])
    voiced = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    o = onset_delays(labels, voiced)
    # first onset 2 frames late; second: voice already on (-1); third missed
    assert o.delays == (2, -1) and o.missed == 1
    assert o.within_one_frame == pytest.approx(1 / 3) and o.mean_delay == 1.0


def test_a_chunk_belongs_to_the_frame_where_its_last_sample_arrives():
    # 16 kHz: 512-sample chunks, 1600-sample frames; chunk 3 ends at 2047 (frame 1)
    assert detectors.chunk_frames(7, 16000).tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert detectors.chunk_frames(7, 8000).tolist() == [0, 0, 0, 1, 1, 1, 2]


def test_webrtc_frames_are_voiced_by_their_share_of_voiced_subframes():
    silence = np.zeros(RATE, np.float32)
    assert detectors.webrtc(silence, RATE, 3).tolist() == [0] * 10
    assert len(detectors.webrtc(np.zeros(RATE + 500, np.float32), RATE, 0)) == 10  # whole frames only


def test_variant_names_its_fields():
    assert variant("x=threshold=0.4,speech_pad_ms=200") == ("x", VadParams(threshold=0.4, speech_pad_ms=200))
    with pytest.raises(ValueError, match="not one of"):
        variant("x=pad=1")
    with pytest.raises(ValueError, match="name other than"):
        variant("system=threshold=0.4")


def test_the_system_column_runs_with_the_workers_defaults():
    assert system_params() == VadParams.from_config(parse_args([], environ={})) == VadParams()
    assert BEFORE == VadParams(threshold=0.5, min_silence_ms=100)


@pytest.fixture(scope="module")
def model() -> SileroOnnx:
    return SileroOnnx()


def test_raw_silero_gives_the_workers_probabilities(model, speech):
    """Raw silero and the worker run the same model on the same chunks: the
    probabilities agree; only the decision on them differs."""
    rec = load(speech("sample1.wav"), seconds=3)
    [raw] = detectors.silero_probs(model, [rec.samples], rec.rate)
    engine, stream_probs = VadEngine(model, VadParams()), list[float]()
    stream, step = VadStream(rec.rate), rec.rate // 10
    for i in range(0, len(rec.samples), step):
        stream_probs.extend(engine.process(stream, rec.samples[i:i + step]).chunk_probs)
    assert len(raw) == len(rec.samples) // CHUNK_SAMPLES[rec.rate]
    np.testing.assert_allclose(raw, stream_probs, atol=1e-5)


def test_a_slice_of_the_benchmark_and_its_system_column_is_the_workers(model, speech, tmp_path, capsys):
    """Three seconds of two files, 8 kHz, white and babble at 5 dB: the
    table's structure, and the system's decisions equal those of a worker's
    frame pipeline fed the same mixes as PCM 16 WAV frames."""
    data = speech("sample1.wav").parents[1]
    out = tmp_path / "vad.json"
    assert main(["--data", str(data), "--files", "sample1.wav,en_example.wav", "--seconds", "3",
                 "--rates", "8000", "--snrs", "5", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())
    names = ["silero", "webrtc0", "webrtc1", "webrtc2", "webrtc3", "before", "system"]
    assert figures["detectors"] == names
    assert [(c["rate"], c["noise"], c["snr"]) for c in figures["conditions"]] == [
        (8000, "clean", None), (8000, "white", 5), (8000, "babble", 5)]
    scored = {c[n]["tp"] + c[n]["fp"] + c[n]["fn"] + c[n]["tn"] for c in figures["conditions"] for n in names}
    assert len(scored) == 1 and scored.pop() > 40  # the same frames scored for every detector and condition
    assert all(0 <= c[n]["f1"] <= 1 for c in figures["conditions"] for n in names)
    assert set(figures["onsets"]) == {"8000"} and set(figures["onsets"]["8000"]) == set(names)
    for head in ("| condition | silero |", "| 8k/white/5dB |", "| 8k/babble/5dB |", "| rate | detector | onsets |"):
        assert head in printed

    # The worker's own pipeline on the same mix, frame by frame as WAV.
    rec = load(data / "speech" / "sample1.wav", seconds=3)
    conds = [Condition(8000, "white", 5)]
    results = run([rec], conds, system_params(), data, variants={})
    [signal] = signals_at(rec, conds, 8000, {})
    config = parse_args(["--encoder", "none"], environ={})
    pipeline = FramePipeline(config.port, VadEngine(model, VadParams.from_config(config)), FrameLog(tmp_path),
                             Accounts())
    step = 8000 // 10
    ints = np.round(signal * 32768).astype(np.int16)
    voices = []
    for seq, start in enumerate(range(0, len(ints) - step + 1, step)):
        audio = decode_wav(encode_wav(ints[start:start + step], 8000))
        assert np.array_equal(audio.samples, signal[start:start + step])
        [reply] = pipeline.process_many([Frame("bench", audio, "s", seq)])
        voices.append(reply["voice"])
    system = results.frames[(conds[0], rec.name)]["system"]
    assert system.tolist() == voices[:len(system)] and len(system) >= 29
