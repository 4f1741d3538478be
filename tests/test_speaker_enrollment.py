"""What an enrollment recording adds to a voiceprint (service.enrollment_embedding):
its whole embedding and the mean of the speaker tracker's windows over it.
The arithmetic, and on real speech (../shared/data/speakers, the served GE2E
graph, the worker's VAD and SpeakerService) that such voiceprints match the
windows a stream is scored on better than whole-recording ones."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voicetools import calibrate
from voicetools.paths import MODELS
from worker.speakers.encoders import DEFAULT_THRESHOLDS, Unavailable
from worker.speakers.loader import load_onnx_encoder
from worker.speakers.service import enrollment_embedding
from worker.vad import SileroOnnx, VadEngine, VadParams


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_a_recording_adds_its_whole_embedding_and_its_windows_mean_alike() -> None:
    whole, windows = np.array([3.0, 0.0, 0.0]), np.array([0.0, 0.5, 0.0])
    both = enrollment_embedding(whole, windows)
    assert np.linalg.norm(both) == pytest.approx(1.0)
    # Each as a unit vector, whatever their lengths: halfway between them.
    assert both == pytest.approx(unit(np.array([1.0, 1.0, 0.0])))
    # A recording with no window (too short to stream one) adds its whole embedding.
    assert enrollment_embedding(whole, None) == pytest.approx(np.array([1.0, 0.0, 0.0]))


def test_voiceprints_match_the_windows_a_stream_is_scored_on(speakers_dir: Path) -> None:
    encoder = load_onnx_encoder("ge2e", "", str(MODELS))
    assert not isinstance(encoder, Unavailable), encoder
    speakers = calibrate.speaker_files(speakers_dir)
    with calibrate.lab(encoder, VadEngine(SileroOnnx(), VadParams()), DEFAULT_THRESHOLDS["ge2e"], 3.0) as lab:
        enrolled = lab.enroll("enrollment", {name: files[:2] for name, files in speakers.items()})
        assert enrolled is not None and list(enrolled.names) == list(speakers)
        whole_only = np.stack([unit(sum(unit(lab.whole(p)) for p in files[:2])) for files in speakers.values()])
        served: dict[str, list[np.ndarray]] = {"target": [], "nontarget": []}
        whole: dict[str, list[np.ndarray]] = {"target": [], "nontarget": []}
        for i, files in enumerate(speakers.values()):
            windows = np.concatenate([lab.windows(p, full_only=True) for p in files[2:]])
            for prints, out in ((enrolled.matrix, served), (whole_only, whole)):
                scores = windows @ prints.T
                out["target"].append(scores[:, i])
                out["nontarget"].append(np.delete(scores, i, axis=1).ravel())
            # Each speaker's own held-out windows come closer to their voiceprint.
            assert served["target"][-1].mean() > whole["target"][-1].mean() + 0.01
    served_eer, _ = calibrate.eer(np.concatenate(served["target"]), np.concatenate(served["nontarget"]))
    whole_eer, _ = calibrate.eer(np.concatenate(whole["target"]), np.concatenate(whole["nontarget"]))
    print(f"1 s windows' EER: {served_eer:.1%} against the served voiceprints, {whole_eer:.1%} against "
          "whole-recording ones")
    assert served_eer < whole_eer
