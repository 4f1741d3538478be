"""The one WAV encoder of the project: 16-bit PCM mono frames, as clients send.

The balancer builds a WAV from HTTP ingest samples (a list of ints: standard
library only, so the balancer never loads numpy); the scripts and tests build
frames from recordings (numpy arrays).
"""
from __future__ import annotations

import array
import io
import sys
import wave
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

FRAME_SECONDS = 0.1


def pcm16(samples: np.ndarray) -> np.ndarray:
    """int16 samples from int16 values or floats in [-1, 1] (clipped to
    +-32767; libsndfile also scales by 32767, but clips -1 to -32768)."""
    import numpy as np

    values = np.asarray(samples)
    if values.dtype.kind == "f":
        values = np.round(np.clip(values, -1.0, 1.0) * 32767)
    return values.astype(np.int16)


def encode_wav(samples: np.ndarray | Sequence[int], sample_rate: int) -> bytes:
    """A mono 16-bit PCM WAV of samples: int16 values (any sequence) or a
    numpy array of int16 values or floats in [-1, 1]."""
    if isinstance(samples, (list, tuple, array.array)):
        data = array.array("h", samples)
        if sys.byteorder == "big":
            data.byteswap()
        pcm = data.tobytes()
    else:
        values = pcm16(samples)  # type: ignore[arg-type]  # not a plain sequence: an array
        pcm = (values.byteswap() if sys.byteorder == "big" else values).tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def split_frames(samples: np.ndarray, sample_rate: int, frame_seconds: float = FRAME_SECONDS) -> list[bytes]:
    """Consecutive WAV frames of frame_seconds (the last may be shorter)."""
    step = max(1, round(frame_seconds * sample_rate))
    return [encode_wav(samples[i:i + step], sample_rate) for i in range(0, len(samples), step)]
