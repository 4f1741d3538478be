"""GE2E's input features in numpy: level, mel frames and partial utterances.

resemblyzer cuts a window this way before its LSTM; these functions do the
same without librosa or torch, so the worker's ONNX graph (graphs.py) and
the torch reference (export/torch_encoders.py) get identical inputs.
"""
from __future__ import annotations

import numpy as np

from .encoders import SAMPLE_RATE

GE2E_N_FFT = 400        # 25 ms windows
GE2E_HOP = 160          # 10 ms steps
GE2E_N_MELS = 40
GE2E_PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
GE2E_TARGET_DBFS = -30.0
GE2E_DIM = 256  # the LSTM's embedding size


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's scale: linear below 1 kHz, logarithmic above (librosa's default).
    hz = np.asarray(hz, np.float64)
    mel = hz / (200.0 / 3)
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    hz = mel * (200.0 / 3)
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_region] - 15.0))
    return hz


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = GE2E_N_FFT, n_mels: int = GE2E_N_MELS) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) (Slaney, area-normalized).

    Written out because importing librosa's filters pulls in numba: ~1.5 s and
    ~200 MB per worker for one small matrix. tests/test_speaker_encoders.py
    checks it against librosa."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0],
                                       _hz_to_mel(np.array([sample_rate / 2.0]))[0], n_mels + 2))
    fdiff = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    return weights.astype(np.float32)


_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(GE2E_N_FFT) / GE2E_N_FFT)).astype(np.float32)


def mel_spectrogram(wav: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(frames, n_mels) power mel spectrogram, as resemblyzer's
    wav_to_mel_spectrogram (librosa.feature.melspectrogram: centered frames,
    zero padding, periodic Hann window, power 2)."""
    padded = np.pad(wav.astype(np.float32, copy=False), GE2E_N_FFT // 2)
    n_frames = 1 + (len(padded) - GE2E_N_FFT) // GE2E_HOP
    return mel_of_frames(np.lib.stride_tricks.sliding_window_view(padded, GE2E_N_FFT)[::GE2E_HOP][:n_frames], basis)


def mel_of_frames(frames: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(frames, n_mels) power mel of (frames, n_fft) sample windows: one
    recording's (mel_spectrogram) or a stream's new frames (windows.py)."""
    power = np.abs(np.fft.rfft(frames * _HANN, axis=1)) ** 2
    return (power @ basis.T).astype(np.float32)


def normalize_level(wav: np.ndarray, target_dbfs: float = GE2E_TARGET_DBFS) -> np.ndarray:
    """Raise quiet audio to target_dbfs, never lower it (as resemblyzer's
    preprocessing, which GE2E was trained with). Silence stays silence."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
    if rms < 1e-6:
        return wav
    gain_db = target_dbfs - 20 * np.log10(rms)
    return wav if gain_db <= 0 else (wav * 10 ** (gain_db / 20)).astype(np.float32)


def partial_slices(n_samples: int, rate: float = 1.3,
                   min_coverage: float = 0.75) -> tuple[list[slice], list[slice]]:
    """(wav slices, mel slices) of the 1.6 s partial utterances of n_samples,
    as resemblyzer's VoiceEncoder.compute_partial_slices: written out because
    that one lives on a torch module. tests/test_speakers_onnx.py checks that
    both agree."""
    samples_per_frame = GE2E_HOP
    n_frames = int(np.ceil((n_samples + 1) / samples_per_frame))
    frame_step = int(np.round((SAMPLE_RATE / rate) / samples_per_frame))
    if not 0 < frame_step <= GE2E_PARTIAL_FRAMES:
        raise ValueError(f"rate {rate} gives a step of {frame_step} frames")
    steps = max(1, n_frames - GE2E_PARTIAL_FRAMES + frame_step + 1)
    mel_slices = [slice(i, i + GE2E_PARTIAL_FRAMES) for i in range(0, steps, frame_step)]
    wav_slices = [slice(m.start * samples_per_frame, m.stop * samples_per_frame) for m in mel_slices]
    last = wav_slices[-1]
    # A last partial with less than min_coverage of real audio is dropped,
    # unless it is the only one.
    if (n_samples - last.start) / (last.stop - last.start) < min_coverage and len(mel_slices) > 1:
        return wav_slices[:-1], mel_slices[:-1]
    return wav_slices, mel_slices


def ge2e_partials(wav: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(n, 160, 40) mel slices of 1.6 s, 1.3 per second, as resemblyzer's
    embed_utterance cuts a window (after raising its level)."""
    wav = normalize_level(wav)
    wav_slices, mel_slices = partial_slices(len(wav))
    if wav_slices[-1].stop >= len(wav):
        wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)))
    mel = mel_spectrogram(wav, basis)
    return np.stack([mel[s] for s in mel_slices])

