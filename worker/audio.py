"""WAV decoding and levels: bytes in, mono float32 at a model rate out."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

NATIVE_RATES = (8000, 16000)
TARGET_RATE = 16000
# soundfile subtypes we accept: integer PCM and IEEE float. Compressed or exotic
# encodings inside a RIFF container are refused rather than guessed at.
ACCEPTED_SUBTYPES = frozenset({"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"})


class AudioError(ValueError):
    """The bytes are not audio this service accepts; the message says why."""


@dataclass(frozen=True, slots=True)
class Audio:
    samples: np.ndarray  # float32, mono, in [-1, 1]
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def decode_wav(
    data: bytes,
    *,
    max_seconds: float = 10.0,
    accepted_rates: tuple[int, ...] | None = None,
) -> Audio:
    """Decode WAV bytes to mono float32 at 8 or 16 kHz.

    Any channel count is down-mixed; rates other than 8 and 16 kHz are
    resampled to 16 kHz. ``accepted_rates`` (when given) limits the rates a
    client may send at all.
    """
    if not data:
        raise AudioError("empty body: expected WAV bytes")
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX", b"RF64") or data[8:12] != b"WAVE":
        raise AudioError("not a WAV file: missing RIFF/WAVE header")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.subtype not in ACCEPTED_SUBTYPES:
                raise AudioError(f"unsupported WAV encoding {f.subtype}: send PCM or float")
            rate, frames, channels = f.samplerate, f.frames, f.channels
            if accepted_rates and rate not in accepted_rates:
                raise AudioError(
                    f"sample rate {rate} Hz not accepted: use one of {', '.join(map(str, accepted_rates))}")
            if rate <= 0 or channels <= 0:
                raise AudioError("WAV header has no sample rate or channels")
            if frames > max_seconds * rate:
                raise AudioError(f"audio too long: {frames / rate:.2f} s, limit {max_seconds:g} s")
            samples = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OverflowError, TypeError) as exc:
        raise AudioError(f"unreadable WAV: {exc}") from None
    if samples.shape[0] == 0:
        raise AudioError("WAV holds no samples")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError("WAV holds NaN or infinite samples")
    np.clip(mono, -1.0, 1.0, out=mono)  # float WAVs may exceed full scale
    if rate not in NATIVE_RATES:
        mono = resample(mono, rate, TARGET_RATE)
        rate = TARGET_RATE
    return Audio(np.ascontiguousarray(mono, dtype=np.float32), rate)


def samples_to_audio(values: list, sample_rate: int, *, max_seconds: float = 10.0) -> Audio:
    """Int16 samples from a JSON list (HTTP ingest) to normalized audio."""
    if not isinstance(values, list) or not values:
        raise AudioError("'data' must be a non-empty list of int16 samples")
    if len(values) > max_seconds * sample_rate:
        raise AudioError(f"audio too long: {len(values) / sample_rate:.2f} s, limit {max_seconds:g} s")
    if not all(type(v) is int and -32768 <= v <= 32767 for v in values):
        raise AudioError("'data' must hold only integers in [-32768, 32767]")
    mono = np.asarray(values, dtype=np.float32) / 32768.0
    if sample_rate not in NATIVE_RATES:
        mono = resample(mono, sample_rate, TARGET_RATE)
        sample_rate = TARGET_RATE
    return Audio(mono.astype(np.float32, copy=False), sample_rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return samples
    g = math.gcd(from_rate, to_rate)
    return resample_poly(samples, to_rate // g, from_rate // g).astype(np.float32)


def to_16k(audio: Audio) -> np.ndarray:
    """Speaker encoders take 16 kHz."""
    return resample(audio.samples, audio.sample_rate, TARGET_RATE)


def dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale; digital silence is -100 dB."""
    if len(samples) == 0:
        return -100.0
    rms = math.sqrt(float(np.dot(samples, samples)) / len(samples))
    return round(max(20.0 * math.log10(rms), -100.0), 1) if rms > 0 else -100.0


def encode_wav(samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype=subtype)
    return buf.getvalue()
