"""The voiced part of an uploaded recording, chosen by the worker's own VAD.

Enrollment and verification count only speech: silence and noise in a
voiceprint would pull it toward every other recording made in the same room.
"""
from __future__ import annotations

import numpy as np

from ..audio import Audio
from ..vad import CHUNK_SAMPLES, VadEngine, VadStream

# Uploads go to the VAD thread in pieces, so frames of streaming accounts are
# not held up behind a two-minute recording.
PIECE_SECONDS = 0.5


def voiced_samples(vad: VadEngine, audio: Audio) -> np.ndarray:
    """The chunks of audio during which VAD had speech on, concatenated, at
    the audio's own rate. Same thresholds and hysteresis as streaming."""
    rate = audio.sample_rate
    stream = VadStream(rate)
    piece = int(PIECE_SECONDS * rate)
    probs = [vad.process(stream, audio.samples[i:i + piece]).chunk_probs
             for i in range(0, len(audio.samples), piece)]
    probs = np.concatenate(probs) if probs else np.empty(0, np.float32)
    # A fresh stream replays the hysteresis chunk by chunk: chunk i covers
    # samples [i * n, (i + 1) * n) of the upload.
    hysteresis = VadStream(rate)
    voiced = np.array([hysteresis.decide(probs[i:i + 1], vad.params)[0] for i in range(len(probs))], bool)
    n = CHUNK_SAMPLES[rate]
    if not voiced.any():
        return np.empty(0, np.float32)
    chunks = audio.samples[:len(voiced) * n].reshape(len(voiced), n)
    return np.ascontiguousarray(chunks[voiced].reshape(-1))
