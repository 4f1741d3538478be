"""The one WAV encoder of the project: 16-bit PCM mono frames, as clients send.

Standard library only: the balancer builds a WAV from HTTP ingest samples, the
scripts and tests build frames from recordings.
"""
from __future__ import annotations

import io
import sys
import wave
from collections.abc import Sequence

import numpy as np

FRAME_SECONDS = 0.1


def pcm16(samples: np.ndarray | Sequence[int]) -> np.ndarray:
    """int16 samples from int16 values or floats in [-1, 1] (clipped)."""
    array = np.asarray(samples)
    if array.dtype.kind == "f":
        array = np.round(np.clip(array, -1.0, 1.0) * 32767)
    return array.astype(np.int16)


def encode_wav(samples: np.ndarray | Sequence[int], sample_rate: int) -> bytes:
    """A mono 16-bit PCM WAV of samples (int16 values or floats in [-1, 1])."""
    data = pcm16(samples)
    if sys.byteorder == "big":
        data = data.byteswap()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(data.tobytes())
    return buf.getvalue()


def split_frames(samples: np.ndarray, sample_rate: int, frame_seconds: float = FRAME_SECONDS) -> list[bytes]:
    """Consecutive WAV frames of frame_seconds (the last may be shorter)."""
    step = max(1, round(frame_seconds * sample_rate))
    return [encode_wav(samples[i:i + step], sample_rate) for i in range(0, len(samples), step)]
