"""The speaker engine's loading: whatever goes wrong, it ends in a state."""
from __future__ import annotations

import numpy as np

from worker.speakers.engine import SpeakerEngine


class BrokenGraph:
    """An encoder that loads but cannot embed (a graph whose shapes do not
    match what the worker feeds it)."""
    name = "ge2e"
    model = "0123456789ab"
    dim = 4

    def embed_batch(self, windows: list[np.ndarray]) -> np.ndarray:
        raise RuntimeError("input 'mels' wants rank 3, got rank 2")


def test_a_failing_warm_up_makes_the_encoder_unavailable_with_the_reason():
    engine = SpeakerEngine("ge2e", BrokenGraph)
    try:
        assert engine.wait_loaded(timeout=20)
        assert engine.state == engine.UNAVAILABLE and not engine.ready
        assert "input 'mels' wants rank 3" in engine.reason
        assert "input 'mels' wants rank 3" in engine.unavailable_message()
    finally:
        engine.close()
