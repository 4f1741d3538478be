"""WAV decoding and levels: bytes in, mono float32 at a model rate out."""
from __future__ import annotations

import io
import math
import struct
import sys
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

NATIVE_RATES = (8000, 16000)
TARGET_RATE = 16000
# Rates accepted when none are configured. Not "any": resampling cost grows
# with rate / gcd(rate, 16000), and a header claiming 1000003 Hz would take
# seconds of CPU per frame (2147483647 Hz, an out-of-memory filter).
COMMON_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
# soundfile subtypes we accept: integer PCM and IEEE float. Compressed or exotic
# encodings inside a RIFF container are refused rather than guessed at.
ACCEPTED_SUBTYPES = frozenset({"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"})
MAX_CHANNELS = 8


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
    accepted_subtypes: frozenset[str] | None = None,
) -> Audio:
    """Decode WAV bytes to mono float32 at 8 or 16 kHz.

    Up to MAX_CHANNELS channels are down-mixed; rates other than 8 and 16 kHz
    are resampled to 16 kHz. ``accepted_rates`` (default COMMON_RATES) and
    ``accepted_subtypes`` (default ACCEPTED_SUBTYPES) limit what a client may send.
    """
    rates = accepted_rates or COMMON_RATES
    subtypes = accepted_subtypes or ACCEPTED_SUBTYPES
    check_container(data)
    # A frame read_pcm16 takes has a data chunk that ends the file in whole
    # sample frames: check_data_chunk has nothing to say about it, and
    # walking its chunks a second time is per-frame work for nothing.
    pcm = read_pcm16(data)
    if pcm is None:
        checked = check_data_chunk(data)
        if checked is not data:  # an unknown length, set to what is present
            data, pcm = checked, read_pcm16(checked)
    if pcm is not None:
        return _pcm16_audio(data, pcm, max_seconds, rates, subtypes)
    return decode_with_soundfile(data, max_seconds, rates, subtypes)


def check_container(data: bytes) -> None:
    """Refuses what is not a RIFF/WAVE container at all, before either reader."""
    if not data:
        raise AudioError("empty body: expected WAV bytes")
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX", b"RF64") or data[8:12] != b"WAVE":
        raise AudioError("not a WAV file: missing RIFF/WAVE header")


# What a streaming writer puts in a size it cannot know yet (sox, ffmpeg to a
# pipe, many recorders): 0 or 0xffffffff. Only these mean "to the end".
UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def check_data_chunk(data: bytes) -> bytes:
    """The data chunk's size against the bytes present, before either reader
    (libsndfile reads what is there whatever the header says, so a frame
    claiming 2 GB with 3,200 bytes present, or cut mid-sample, would pass as a
    normal frame). A size of 0 or 0xffffffff is a streaming writer's "unknown
    length": the data is the rest of the file, and the sizes are set to it so
    both readers agree. Any other size must fit in what is present, and the
    data must be whole sample frames; else AudioError naming the mismatch.
    RF64 keeps its real sizes in its ds64 chunk and is left to libsndfile, as
    is a container whose chunks cannot be followed to a data chunk (its error)."""
    if data[:4] == b"RF64":
        return data
    little = data[:4] == b"RIFF"
    chunk, fmt_block = (_CHUNK, _FMT) if little else (_CHUNK_BE, _FMT_BE)
    offset, block_align = 12, 0
    while offset + 8 <= len(data):
        name, size = chunk.unpack_from(data, offset)
        body = offset + 8
        if name == b"fmt " and body + 16 <= len(data):
            block_align = fmt_block.unpack_from(data, body)[4]
        elif name == b"data":
            present = len(data) - body
            if size in UNKNOWN_SIZES:
                size = present
                data = _with_sizes(data, offset, size, chunk)
            elif size > present:
                raise AudioError(f"WAV data chunk claims {size} bytes but {present} are present "
                                 f"(a streaming writer's unknown length is 0 or 0xffffffff)")
            if block_align and size % block_align:
                raise AudioError(f"WAV data ends mid-sample: {size} bytes is not a whole number of "
                                 f"{block_align}-byte sample frames")
            return data
        offset = body + size + (size & 1)  # chunks are padded to an even size
    return data


def _with_sizes(data: bytes, data_offset: int, size: int, chunk: struct.Struct) -> bytes:
    """data with its data chunk's size and the RIFF size set to what is present."""
    fixed = bytearray(data)
    chunk.pack_into(fixed, 0, data[:4], len(data) - 8)
    chunk.pack_into(fixed, data_offset, b"data", size)
    return bytes(fixed)


def decode_with_soundfile(data: bytes, max_seconds: float, rates: tuple[int, ...],
                          subtypes: frozenset[str]) -> Audio:
    """decode_wav through libsndfile: every WAV the fast path does not take."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate = f.samplerate
            _check_header(f.subtype, rate, f.channels, f.frames, max_seconds, rates, subtypes)
            samples = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OverflowError, TypeError) as exc:
        # libsndfile's own words, without soundfile's "Error opening <BytesIO at 0x...>: "
        raise AudioError(f"unreadable WAV: {getattr(exc, 'error_string', None) or exc}") from None
    if samples.shape[0] == 0:
        raise AudioError("WAV holds no samples")
    if not np.isfinite(samples).all():
        raise AudioError("WAV holds NaN or infinite samples")
    # float64 sum: float WAVs may hold values near float32's maximum.
    mono = samples.mean(axis=1, dtype=np.float64) if samples.shape[1] > 1 else samples[:, 0]
    if rate not in NATIVE_RATES:
        mono = resample(mono, rate, TARGET_RATE)
        rate = TARGET_RATE
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    # Float WAVs may exceed full scale, and resampling overshoots near it.
    np.clip(mono, -1.0, 1.0, out=mono)
    return Audio(mono, rate)


def _check_header(subtype: str, rate: int, channels: int, frames: int, max_seconds: float,
                  rates: tuple[int, ...], subtypes: frozenset[str]) -> None:
    if subtype not in subtypes:
        raise AudioError(f"unsupported WAV encoding {subtype}: send one of {', '.join(sorted(subtypes))}")
    if rate not in rates:
        raise AudioError(f"sample rate {rate} Hz not accepted: use one of {', '.join(map(str, rates))}")
    if not 0 < channels <= MAX_CHANNELS:
        raise AudioError(f"WAV header claims {channels} channels: 1 to {MAX_CHANNELS} accepted")
    if frames > max_seconds * rate:
        raise AudioError(f"audio too long: {frames / rate:.2f} s, limit {max_seconds:g} s")


@dataclass(frozen=True, slots=True)
class Pcm16:
    """A plain PCM 16 WAV's layout, read without libsndfile."""
    rate: int
    channels: int
    start: int  # offset of the samples in the WAV bytes
    frames: int


WAVE_FORMAT_PCM = 1
_FMT = struct.Struct("<HHIIHH")  # format tag, channels, rate, byte rate, block align, bits
_FMT_BE = struct.Struct(">HHIIHH")
_CHUNK = struct.Struct("<4sI")
_CHUNK_BE = struct.Struct(">4sI")  # RIFX: big-endian sizes


def read_pcm16(data: bytes) -> Pcm16 | None:
    """The layout of a little-endian RIFF WAV holding 16-bit PCM mono or stereo
    (format tag 1) whose sizes all agree - what clients send - or None for
    anything else, which libsndfile reads instead.

    Opening a frame with soundfile cost ~60 µs (12% of a busy worker's time at
    2,000 frames/s); this reads the header with struct and the samples with
    numpy. Only layouts without any doubt take this path: a chunk other than
    "fmt " and "data", a RIFF size other than the file's, a data chunk not
    ending the file, an odd data size, WAVE_FORMAT_EXTENSIBLE, other widths,
    or a big-endian host fall back, so their samples and errors stay
    libsndfile's."""
    if sys.byteorder != "little" or data[:4] != b"RIFF" or len(data) < 44:
        return None
    riff_size = _CHUNK.unpack_from(data, 0)[1]
    if riff_size + 8 != len(data):
        return None
    offset, fmt = 12, None
    while offset + 8 <= len(data):
        chunk, size = _CHUNK.unpack_from(data, offset)
        body = offset + 8
        if chunk == b"fmt ":
            if fmt is not None or size < 16 or body + size > len(data):
                return None
            fmt = _FMT.unpack_from(data, body)
        elif chunk == b"data":
            if fmt is None or body + size != len(data):
                return None
            tag, channels, rate, byte_rate, align, bits = fmt
            if tag != WAVE_FORMAT_PCM or bits != 16 or channels not in (1, 2) or align != 2 * channels \
                    or byte_rate != rate * align or size % align or not 0 < rate < 2**31:
                return None  # libsndfile refuses a rate of 0 or one over its int: its error, not ours
            return Pcm16(rate, channels, body, size // align)
        else:
            # libsndfile reads some chunks (LIST/INFO's inner sizes) and resyncs on
            # ids it does not know: stepping over them gave 36-112 outcomes other
            # than libsndfile's among 20,000-40,000 mutated headers. Its reading decides.
            return None
        offset = body + size + (size & 1)  # chunks are padded to an even size
    return None


# libsndfile's scale for 16-bit PCM read as float (1 / 0x8000): a power of
# two, so every sample converts exactly and both paths give the same floats.
PCM16_SCALE = np.float32(1 / 32768)


def _pcm16_audio(data: bytes, pcm: Pcm16, max_seconds: float, rates: tuple[int, ...],
                 subtypes: frozenset[str]) -> Audio:
    _check_header("PCM_16", pcm.rate, pcm.channels, pcm.frames, max_seconds, rates, subtypes)
    if pcm.frames == 0:
        raise AudioError("WAV holds no samples")
    samples = np.frombuffer(data, dtype="<i2", count=pcm.frames * pcm.channels, offset=pcm.start).astype(np.float32)
    samples *= PCM16_SCALE
    rate = pcm.rate
    mono = samples.reshape(-1, 2).mean(axis=1, dtype=np.float64) if pcm.channels == 2 else samples
    if rate not in NATIVE_RATES:
        mono = resample(mono, rate, TARGET_RATE)
        rate = TARGET_RATE
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate != pcm.rate:  # resampling overshoots near full scale; 16-bit samples are within [-1, 1)
        np.clip(mono, -1.0, 1.0, out=mono)
    return Audio(mono, rate)


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

