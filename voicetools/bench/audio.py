"""What the streams send: recordings cut into 100 ms WAV frames, and in
speaker mode the speakers each account enrolls and then hears."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from voicestream.wav import FRAME_SECONDS, encode_wav, split_frames
from voicetools.paths import DATA

from . import BenchError

FRAMES_PER_SECOND = round(1 / FRAME_SECONDS)
FALLBACK_SPEECH = DATA


@dataclass(frozen=True)
class StreamSource:
    """One recording cut into ready-to-send WAV frames (bytes built once)."""
    name: str
    sample_rate: int
    frames: tuple[bytes, ...]


def whole_frames(samples: np.ndarray, sample_rate: int, frame_seconds: float = FRAME_SECONDS) -> list[bytes]:
    """Whole frames of frame_seconds as WAV bytes; a short tail is dropped so
    every frame is the same length, as a live source sends them."""
    n = round(sample_rate * frame_seconds)
    if n <= 0:
        raise BenchError(f"frame of {frame_seconds:g} s at {sample_rate} Hz holds no samples")
    return split_frames(samples[:len(samples) - len(samples) % n], sample_rate, frame_seconds)


def read_mono_int16(path: Path) -> tuple[np.ndarray, int]:
    """The first channel of a recording as int16 samples, and its rate."""
    samples, rate = sf.read(str(path), dtype="int16", always_2d=True)
    return samples[:, 0].copy(), rate


def speech_files(speech_dir: Path, fallback: Path = FALLBACK_SPEECH) -> list[Path]:
    for directory in (speech_dir, fallback):
        files = sorted(directory.glob("*.wav")) if directory.is_dir() else []
        if files:
            return files
    raise BenchError(f"no speech WAVs in {speech_dir} or {fallback}")


def load_speech_sources(files: Sequence[Path]) -> list[StreamSource]:
    sources = []
    for path in files:
        samples, rate = read_mono_int16(path)
        frames = whole_frames(samples, rate)
        if frames:
            sources.append(StreamSource(path.name, rate, tuple(frames)))
    if not sources:
        raise BenchError(f"none of {', '.join(p.name for p in files)} holds a whole 100 ms frame")
    return sources


@dataclass(frozen=True)
class Speaker:
    name: str
    enroll_wav: bytes  # the first recordings, at least enroll_seconds long
    held_out: np.ndarray  # the rest, streamed; never part of the enrollment
    sample_rate: int

    @property
    def enroll_seconds(self) -> float:
        # PCM16 mono: 2 bytes a sample (the 44-byte header is noise here).
        return len(self.enroll_wav) // 2 / self.sample_rate


def load_speakers(speakers_dir: Path, enroll_seconds: float) -> list[Speaker]:
    """Every speaker directory with at least two recordings at one rate: the
    first recordings (>= enroll_seconds) to enroll, the rest to stream."""
    if not speakers_dir.is_dir():
        raise BenchError(f"speaker mode needs recordings per speaker in {speakers_dir} (absent)")
    speakers = []
    for directory in sorted(d for d in speakers_dir.iterdir() if d.is_dir()):
        files = sorted(directory.glob("*.wav"))
        if len(files) < 2:
            continue
        parts = [read_mono_int16(f) for f in files]
        rates = {rate for _, rate in parts}
        if len(rates) != 1:
            continue
        rate = rates.pop()
        enroll: list[np.ndarray] = []
        held: list[np.ndarray] = []
        for samples, _ in parts:
            (held if sum(map(len, enroll)) >= enroll_seconds * rate else enroll).append(samples)
        if held and sum(map(len, enroll)) >= enroll_seconds * rate:
            speakers.append(Speaker(directory.name, encode_wav(np.concatenate(enroll), rate),
                                    np.concatenate(held), rate))
    if len(speakers) < 2:
        raise BenchError(f"speaker mode needs at least 2 speakers with >= {enroll_seconds:g} s to enroll "
                         f"and more to stream in {speakers_dir}")
    return speakers


def account_speakers(index: int, speakers: Sequence[Speaker]) -> tuple[Speaker, Speaker]:
    """The two speakers account number index enrolls (neighbours, round robin)."""
    return speakers[index % len(speakers)], speakers[(index + 1) % len(speakers)]


def speaker_source(pair: tuple[Speaker, Speaker]) -> StreamSource:
    """The stream of an account: its two enrolled speakers' held-out speech in turn."""
    a, b = pair
    return StreamSource(f"{a.name}+{b.name}", a.sample_rate,
                        tuple(whole_frames(np.concatenate((a.held_out, b.held_out)), a.sample_rate)))


def describe_sources(speakers: Sequence[Speaker], speech: Sequence[StreamSource]) -> list[str]:
    """One line per recording streamed (vad mode) or speaker enrolled (speaker mode)."""
    if speakers:
        return [f"{s.name} (enroll {s.enroll_seconds:.1f} s, stream {len(s.held_out) / s.sample_rate:.1f} s)"
                for s in speakers]
    return [f"{s.name} ({s.sample_rate} Hz, {len(s.frames) / FRAMES_PER_SECOND:.1f} s)" for s in speech]
