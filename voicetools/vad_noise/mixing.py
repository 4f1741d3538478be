"""Noisy mixes: speech at both model rates, white and babble noise, a set SNR.

SNR is speech power over noise power, where speech power is the mean square of
the clean signal over its reference speech (labels.active_segments: the 10 ms
segments the energy labelling marks active), not over the whole file: pauses
would otherwise lower the speech power by their share and make a file with
more pauses look noisier at the same setting. Noise power is the mean square
of the noise over the whole mix.
"""
from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly

RATES = (8000, 16000)
# Talkers summed into babble: with 6 or more, single words stop standing out
# and the sum sounds like a crowd (fewer is closer to a competing speaker).
BABBLE_TALKERS = 6


def resample(samples: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    if rate == to_rate:
        return samples.astype(np.float32)
    g = gcd(rate, to_rate)
    return resample_poly(samples, to_rate // g, rate // g).astype(np.float32)


def power(samples: np.ndarray) -> float:
    return float(np.mean(np.square(samples, dtype=np.float64))) if len(samples) else 0.0


def white(length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(length).astype(np.float32)


def babble(sources: list[np.ndarray], length: int, seed: int, talkers: int = BABBLE_TALKERS) -> np.ndarray:
    """The sum of `talkers` voices, each a seeded shuffle of the sources
    (recordings at the mix's rate, none of them the speech being mixed)
    played back to back from a random offset. Each source is scaled to unit
    power first so no recording dominates the crowd."""
    if not sources:
        raise ValueError("babble needs at least one source recording")
    rng = np.random.default_rng(seed)
    units = [s / np.sqrt(power(s)) for s in sources if power(s) > 0]
    total = np.zeros(length, np.float64)
    for _ in range(talkers):
        voice: list[np.ndarray] = []
        while sum(map(len, voice)) < 2 * length:
            voice.extend(units[i] for i in rng.permutation(len(units)))
        joined = np.concatenate(voice)
        start = int(rng.integers(0, len(joined) - length + 1))
        total += joined[start:start + length]
    return total.astype(np.float32)


def mix(speech: np.ndarray, active: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + noise scaled so that power(speech[active]) / power(noise) is
    snr_db. active: a boolean mask over the speech samples."""
    if len(noise) != len(speech) or len(active) != len(speech):
        raise ValueError(f"speech ({len(speech)}), mask ({len(active)}) and noise ({len(noise)}) lengths differ")
    speech_power = power(speech[active])
    if speech_power == 0:
        raise ValueError("the speech has no active samples to measure its power over")
    gain = np.sqrt(speech_power / (power(noise) * 10 ** (snr_db / 10)))
    return (speech + gain * noise).astype(np.float32)


def achieved_snr(speech: np.ndarray, active: np.ndarray, mixed: np.ndarray) -> float:
    noise = mixed.astype(np.float64) - speech
    return 10 * np.log10(power(speech[active]) / power(noise))


def as_pcm16(samples: np.ndarray) -> np.ndarray:
    """What a 100 ms PCM 16 WAV frame carries, back as the worker decodes it
    (soundfile: int / 32768). A mix louder than full scale is scaled down as a
    whole first (the SNR is unchanged), never clipped."""
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    if peak > 0.99:
        samples = samples * (0.99 / peak)
    ints = np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int16)
    return ints.astype(np.float32) / 32768
