"""WAV decoding: channels, rates, PCM and float, and refusals with reasons."""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from voicestream.wav import encode_wav
from worker.audio import AudioError, dbfs, decode_wav


def wav(samples: np.ndarray, rate: int, subtype: str) -> bytes:
    """A WAV of any soundfile subtype, channels as columns (16-bit PCM mono:
    voicestream.wav.encode_wav, as clients send it)."""
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def tone(rate: int, seconds: float = 0.1, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "PCM_U8", "FLOAT", "DOUBLE"])
def test_native_rates_and_formats_decode_unchanged(rate, subtype):
    x = tone(rate)
    audio = decode_wav(wav(x, rate, subtype))
    assert audio.sample_rate == rate and audio.samples.dtype == np.float32 and len(audio.samples) == len(x)
    np.testing.assert_allclose(audio.samples, x, atol=1e-2 if subtype == "PCM_U8" else 1e-4)


def test_stereo_is_down_mixed_to_mono():
    left, right = tone(16000, freq=300), tone(16000, freq=500)
    audio = decode_wav(wav(np.stack([left, right], axis=1), 16000, "PCM_16"))
    np.testing.assert_allclose(audio.samples, (left + right) / 2, atol=1e-4)


@pytest.mark.parametrize("rate", [11025, 22050, 44100, 48000])
def test_other_rates_are_resampled_to_16k(rate):
    audio = decode_wav(encode_wav(tone(rate, seconds=0.5, freq=1000), rate))
    assert audio.sample_rate == 16000 and len(audio.samples) == 8000
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert abs(np.argmax(spectrum) * 16000 / len(audio.samples) - 1000) < 5  # the tone keeps its pitch


def test_real_speech(speech):
    data = speech("sample1.wav").read_bytes()
    audio = decode_wav(data, max_seconds=60)
    assert audio.sample_rate == 8000 and abs(audio.seconds - 27.2) < 0.1


@pytest.mark.parametrize("data, message", [
    (b"", "empty body"),
    (b"hello world, not a wav", "not a WAV"),
    (b"RIFF\x00\x00\x00\x00WAVE", "unreadable WAV"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(16), "unreadable WAV"),
])
def test_not_a_wav_says_why(data, message):
    with pytest.raises(AudioError, match=message):
        decode_wav(data)


def test_zero_length_audio():
    with pytest.raises(AudioError, match="no samples"):
        decode_wav(encode_wav(np.zeros(0, np.float32), 16000))


def test_nan_in_float_wav():
    x = tone(16000)
    x[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        decode_wav(wav(x, 16000, "FLOAT"))


def test_too_long_and_rate_limits():
    with pytest.raises(AudioError, match="too long"):
        decode_wav(encode_wav(tone(8000, seconds=2), 8000), max_seconds=1)
    with pytest.raises(AudioError, match="sample rate 44100 Hz not accepted"):
        decode_wav(encode_wav(tone(44100), 44100), accepted_rates=(8000, 16000))


def test_truncated_wav_keeps_what_is_there():
    data = encode_wav(tone(8000), 8000)
    audio = decode_wav(data[: len(data) // 2])
    assert 0 < len(audio.samples) < 800


def test_dbfs():
    assert dbfs(np.zeros(100, np.float32)) == -100.0
    assert dbfs(np.ones(100, np.float32)) == 0.0
    assert abs(dbfs(tone(16000, amp=0.5)) - (-9.0)) < 0.1  # a sine's RMS is amp/sqrt(2)


def test_frames_as_clients_encode_them_decode_to_their_samples():
    x = tone(8000)
    np.testing.assert_allclose(decode_wav(encode_wav(x, 8000)).samples, x, atol=1e-4)
