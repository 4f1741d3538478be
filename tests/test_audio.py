"""WAV decoding: channels, rates, PCM and float, and refusals with reasons."""
from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicestream.wav import encode_wav
from worker.audio import (
    ACCEPTED_SUBTYPES,
    COMMON_RATES,
    AudioError,
    check_container,
    check_data_chunk,
    dbfs,
    decode_wav,
    decode_with_soundfile,
    read_pcm16,
    resample,
)


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


def test_a_wav_whose_data_size_lies_is_refused_by_name():
    data = encode_wav(tone(8000), 8000)  # 800 samples, 1,600 bytes of data
    with pytest.raises(AudioError, match="WAV data chunk claims 1600 bytes but 800 are present"):
        decode_wav(data[:44 + 800])  # cut in half
    claims = bytearray(encode_wav(tone(16000), 16000))  # 3,200 bytes present
    for size in (0x7FFFFFFF, 3202, 10**6):
        claims[40:44] = struct.pack("<I", size)
        with pytest.raises(AudioError, match=f"claims {size} bytes but 3200 are present"):
            decode_wav(bytes(claims))
    with pytest.raises(AudioError, match="ends mid-sample: 1599 bytes is not a whole number of 2-byte sample frames"):
        decode_wav(riff(fmt(), chunk(b"data", pcm(800)[:-1])))
    stereo = riff(fmt(channels=2), chunk(b"data", pcm(800, channels=2)[:-2]))
    with pytest.raises(AudioError, match="ends mid-sample: 3198 bytes .* 4-byte sample frames"):
        decode_wav(stereo)


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_a_streaming_writers_unknown_length_reads_to_the_end(size):
    good = encode_wav(tone(16000), 16000)
    streamed = bytearray(good)
    streamed[4:8] = struct.pack("<I", size)    # the RIFF size, unknown too
    streamed[40:44] = struct.pack("<I", size)  # the data chunk's
    expected = decode_wav(good).samples
    assert np.array_equal(decode_wav(bytes(streamed)).samples, expected)
    assert check_data_chunk(bytes(streamed)) == good  # the sizes set to what is there: both readers agree
    # ... and through libsndfile too (a RIFF size left as it was keeps the fast path out).
    streamed[4:8] = struct.pack("<I", len(good) - 8 + 2)
    assert np.array_equal(decode_wav(bytes(streamed)).samples, expected)
    # Cut mid-sample, an unknown length is still refused.
    with pytest.raises(AudioError, match="ends mid-sample"):
        decode_wav(bytes(streamed)[:-1])


def test_rf64_and_riffs_without_a_data_chunk_are_left_to_libsndfile():
    no_data = riff(fmt())
    assert check_data_chunk(no_data) == no_data
    rf64 = b"RF64" + encode_wav(tone(16000), 16000)[4:]
    assert check_data_chunk(rf64) == rf64


def test_dbfs():
    assert dbfs(np.zeros(100, np.float32)) == -100.0
    assert dbfs(np.ones(100, np.float32)) == 0.0
    assert abs(dbfs(tone(16000, amp=0.5)) - (-9.0)) < 0.1  # a sine's RMS is amp/sqrt(2)


def test_frames_as_clients_encode_them_decode_to_their_samples():
    x = tone(8000)
    np.testing.assert_allclose(decode_wav(encode_wav(x, 8000)).samples, x, atol=1e-4)


# The PCM 16 fast path (read_pcm16) must give exactly libsndfile's samples and,
# for anything it does not take, libsndfile's own outcome.

def reference(data: bytes) -> np.ndarray | str:
    """What decode_wav gave before the fast path: libsndfile's reading."""
    try:
        check_container(data)
        return decode_with_soundfile(check_data_chunk(data), 120, COMMON_RATES, ACCEPTED_SUBTYPES).samples
    except AudioError as exc:
        return str(exc)


def outcome(data: bytes) -> np.ndarray | str:
    try:
        return decode_wav(data, max_seconds=120).samples
    except AudioError as exc:
        return str(exc)


def assert_same(data: bytes) -> None:
    got, want = outcome(data), reference(data)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
    else:
        assert got.dtype == np.float32 and np.array_equal(got, want)


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def chunk(name: bytes, body: bytes) -> bytes:
    return name + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1)


def fmt(channels: int = 1, rate: int = 16000, bits: int = 16, tag: int = 1, extra: bytes = b"") -> bytes:
    align = channels * bits // 8
    return chunk(b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * align % 2**32, align, bits) + extra)


def pcm(n: int = 1600, channels: int = 1) -> bytes:
    values = (tone(16000, seconds=n / 16000) * 32767).astype("<i2")
    return np.repeat(values, channels).tobytes() if channels > 1 else values.tobytes()


def test_fast_path_takes_what_clients_send():
    layout = read_pcm16(encode_wav(tone(16000), 16000))
    assert layout is not None and (layout.rate, layout.channels, layout.start, layout.frames) == (16000, 1, 44, 1600)


def test_fast_path_gives_libsndfiles_samples_on_real_recordings(speech, speakers_dir):
    files = sorted(Path("data").glob("*.wav")) + [speech(name) for name in ("sample1.wav", "en_example.wav")] + \
        sorted(speakers_dir.glob("*/*.wav"))[:4]
    for path in files:
        data = path.read_bytes()
        assert read_pcm16(data) is not None, path
        assert_same(data)
        samples, rate = sf.read(path, dtype="int16")
        stereo = encode_stereo(np.stack([samples, samples[::-1]], axis=1), rate)
        assert read_pcm16(stereo) is not None and read_pcm16(stereo).channels == 2  # type: ignore[union-attr]
        assert_same(stereo)
        frame = encode_wav(samples[:rate // 10], rate)  # one 100 ms frame, as clients send
        assert_same(frame)


def encode_stereo(samples: np.ndarray, rate: int) -> bytes:
    return wav(samples, rate, "PCM_16")


def test_fast_path_full_scale_and_stereo_mean():
    extremes = np.array([-32768, 32767, -1, 0, 1, 12345, -32768, -32768], dtype="<i2")
    assert_same(riff(fmt(), chunk(b"data", extremes.tobytes())))
    assert_same(riff(fmt(channels=2), chunk(b"data", extremes.tobytes())))


@pytest.mark.parametrize("name, data, fast", [
    ("LIST chunk before data", riff(fmt(), chunk(b"LIST", b"INFOISFT\x05\0\0\0espk\0\0"), chunk(b"data", pcm())),
     False),
    ("odd-sized LIST with its pad byte", riff(fmt(), chunk(b"LIST", b"INFOabc"), chunk(b"data", pcm())), False),
    ("another chunk before data", riff(fmt(), chunk(b"junk", b"abc"), chunk(b"data", pcm())), False),
    ("an unknown id before data", riff(fmt(), chunk(b"\xff\xffIST", b"INFOabc"), chunk(b"data", pcm())), False),
    ("LIST, wrong inner size", riff(fmt(), chunk(b"LIST", b"INFOISFT\x28\0\0\0espk\0\0"), chunk(b"data", pcm())),
     False),
    ("fmt of 18 bytes (cbSize 0)", riff(fmt(extra=b"\0\0"), chunk(b"data", pcm())), True),
    ("WAVE_FORMAT_EXTENSIBLE", None, False),
    ("odd data size", riff(fmt(), chunk(b"data", pcm() + b"\x01"))[:-1], False),
    ("data size past the end (truncated)", None, False),
    ("RIFF size larger than the file", None, False),
    ("chunk after data", riff(fmt(), chunk(b"data", pcm()), chunk(b"LIST", b"INFO")), False),
    ("no fmt before data", riff(chunk(b"data", pcm()), fmt()), False),
    ("8-bit", wav(tone(16000), 16000, "PCM_U8"), False),
    ("24-bit", wav(tone(16000), 16000, "PCM_24"), False),
    ("float", wav(tone(16000), 16000, "FLOAT"), False),
    ("three channels", riff(fmt(channels=3), chunk(b"data", pcm(channels=3))), False),
    ("block align disagreeing", None, False),
    ("no samples", riff(fmt(), chunk(b"data", b"")), True),
    ("rate 0", riff(fmt(rate=0), chunk(b"data", pcm())), False),
    ("rate over a signed int", riff(fmt(rate=2**31), chunk(b"data", pcm())), False),
    ("header only", riff(fmt()), False),
])
def test_odd_headers_give_libsndfiles_outcome(name, data, fast):
    if name == "WAVE_FORMAT_EXTENSIBLE":
        pcm_guid = bytes.fromhex("0100000000001000800000aa00389b71")
        extensible = struct.pack("<HHI", 22, 16, 4) + pcm_guid  # cbSize, valid bits, channel mask, PCM
        data = riff(fmt(tag=0xFFFE, extra=extensible), chunk(b"data", pcm()))
    elif name == "data size past the end (truncated)":
        data = encode_wav(tone(16000), 16000)[:1000]
    elif name == "RIFF size larger than the file":
        good = encode_wav(tone(16000), 16000)
        data = good[:4] + struct.pack("<I", len(good)) + good[8:]
    elif name == "block align disagreeing":
        good = bytearray(encode_wav(tone(16000), 16000))
        good[32:34] = struct.pack("<H", 4)
        data = bytes(good)
    assert (read_pcm16(data) is not None) == fast, name
    assert_same(data)


def test_fast_path_keeps_the_limits():
    data = encode_wav(tone(8000, seconds=2), 8000)
    with pytest.raises(AudioError, match=r"audio too long: 2.00 s, limit 1 s"):
        decode_wav(data, max_seconds=1)
    with pytest.raises(AudioError, match="sample rate 8000 Hz not accepted: use one of 16000"):
        decode_wav(data, accepted_rates=(16000,))
    with pytest.raises(AudioError, match="unsupported WAV encoding PCM_16: send one of FLOAT"):
        decode_wav(data, accepted_subtypes=frozenset({"FLOAT"}))
    with pytest.raises(AudioError, match="WAV holds no samples"):
        decode_wav(riff(fmt(), chunk(b"data", b"")))


def test_fast_path_resamples_like_before():
    data = encode_wav(tone(44100, amp=1.0), 44100)
    assert read_pcm16(data) is not None
    fast = decode_wav(data).samples
    samples, _ = sf.read(io.BytesIO(data), dtype="float32")
    slow = np.clip(resample(samples, 44100, 16000).astype(np.float32), -1.0, 1.0)
    assert np.array_equal(fast, slow) and fast.max() <= 1.0


def test_fast_path_agrees_with_libsndfile_on_mutated_headers():
    # Seeded mutations of the first 90 bytes (single bytes, and 2- or 4-byte
    # fields set to telling values) and truncations of frames as clients and
    # other writers make them: whatever the fast path takes, it must read as
    # libsndfile does, and give libsndfile's error otherwise. (60,000 mutants
    # of the same kind agreed when the fast path was written.)
    rng = random.Random(11)
    bases = [encode_wav(tone(16000), 16000), encode_wav(tone(8000), 8000),
             wav(np.stack([tone(16000)] * 2, axis=1), 16000, "PCM_16"),
             riff(fmt(extra=b"\0\0"), chunk(b"data", pcm())),
             riff(fmt(channels=2), chunk(b"LIST", b"INFOISFT\x05\0\0\0espk\0\0"), chunk(b"data", pcm(channels=2)))]
    values = [0, 1, 2, 3, 4, 16, 18, 40, 44, 255, 0xFFFE, 8000, 16000, 0x7FFFFFFF, 0xFFFFFFFF]
    taken = 0
    for _ in range(4000):
        data = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(90)
            if rng.random() < 0.5:
                data[at] = rng.randrange(256)
            else:
                width = rng.choice([2, 4])
                data[at:at + width] = (rng.choice(values) % 2 ** (8 * width)).to_bytes(width, "little")
        if rng.random() < 0.2:
            data = data[:rng.randrange(len(data))]
        taken += read_pcm16(bytes(data)) is not None
        assert_same(bytes(data))
    assert taken > 100  # the fast path was exercised, not only the fallback
