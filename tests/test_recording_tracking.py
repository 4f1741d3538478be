"""track_recording (what voicestream-calibrate measures) labels a recording
as a worker's tracker labels the same audio streamed in 100 ms frames: the
same windows at the same frames (the sure step included), the same immediate
labels and scores. Real speech (../shared/data/speakers: two speakers taking
turns), the served GE2E graph, the worker's VAD, SpeakerService enrollment and
SpeakerTracker."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from voicetools import calibrate
from voicetools.paths import MODELS
from worker.audio import Audio
from worker.speakers.encoders import DEFAULT_THRESHOLDS, SCORE_MODELS, Unavailable
from worker.speakers.engine import SpeakerEngine
from worker.speakers.loader import load_onnx_encoder
from worker.speakers.scoring import Roster
from worker.speakers.service import SpeakerService
from worker.speakers.tracker import (
    FrameRef,
    SpeakerFrame,
    SpeakerTrack,
    SpeakerTracker,
    record_windows,
    scheduled,
    track_recording,
)
from worker.storage.sqlite import SqliteVoiceprintStore
from worker.storage.voiceprints import EncoderId
from worker.vad import SileroOnnx, VadEngine, VadParams, VadStream

FRAME_SECONDS = 0.1


@dataclass(eq=False)
class Account:
    code: str
    speech: SpeakerTrack | None = None


def test_a_recording_is_tracked_as_a_worker_tracks_its_stream(speakers_dir: Path, tmp_path: Path) -> None:
    encoder = load_onnx_encoder("ge2e", "", str(MODELS))
    assert not isinstance(encoder, Unavailable), encoder
    vad = VadEngine(SileroOnnx(), VadParams())
    store = SqliteVoiceprintStore(tmp_path / "voiceprints.db")
    engine = SpeakerEngine("ge2e", lambda: encoder)
    assert engine.wait_loaded(60)
    service = SpeakerService(engine, store, vad, None, DEFAULT_THRESHOLDS["ge2e"], 3.0)
    files = calibrate.speaker_files(speakers_dir)
    a, b = sorted(files)[:2]
    for name in (a, b):
        service.enroll("acct", name, calibrate.read_wav(files[name][0]))
    roster = Roster(store)
    enrolled = roster.enrolled("acct", EncoderId(encoder.name, encoder.model, encoder.dim))
    assert enrolled is not None

    # Two turns of each, with pauses of 0.5 s between them (new runs of speech).
    turns = [calibrate.read_wav(files[name][i]).samples[:16000 * 6] for i, name in ((2, a), (2, b), (3, a), (3, b))]
    pause = np.zeros(8000, np.float32)
    audio = Audio(np.concatenate([x for turn in turns for x in (turn, pause)]), 16000)

    frames = record_windows(encoder, vad, audio)
    immediate, _ = track_recording(frames, enrolled, SCORE_MODELS["ge2e"], 1.0)
    recorded_windows = sum(e is not None for _, e in scheduled(frames, lambda: False))

    tracker = SpeakerTracker(engine, roster, None, 1.0)
    account, stream = Account("acct"), VadStream(16000)
    n = round(FRAME_SECONDS * 16000)
    streamed: list[tuple[str | None, float | None]] = []
    embedded = engine.windows_embedded
    for i, start in enumerate(range(0, len(audio.samples) - n + 1, n)):
        samples = audio.samples[start:start + n]
        voice = vad.process(stream, samples).voice
        [result] = tracker.on_frames([SpeakerFrame(account, FrameRef("s", i, i * 100), Audio(samples, 16000), voice)])
        streamed.append((result.speaker, result.score))
    worker_windows = engine.windows_embedded - embedded
    engine.close()

    labels = [(label.speaker, label.score) if label is not None else (None, None) for label in immediate]
    assert [s for s, _ in labels] == [s for s, _ in streamed]
    assert [x for _, x in labels] == pytest.approx([x for _, x in streamed], abs=1e-4)
    names = {s for s, _ in streamed}
    assert {a, b} <= names, names  # both voices named: the comparison covers turn changes
    # The sure step took fewer windows than one every 0.2 s, the same for both.
    assert worker_windows < recorded_windows
