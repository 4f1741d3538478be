"""Split WAV files into fixed-length WAV frames, the unit clients stream.

    .venv/bin/voicestream-split                  # every data/*.wav -> data/chunks_<name>/
    .venv/bin/voicestream-split call.wav --frame-ms 20 --out-dir /tmp/frames

Each frame keeps the source's sample rate, channel count and encoding, so the
frames concatenated give back the source samples exactly. The last frame is
kept even when shorter than the others.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from voicetools.paths import DATA

PROG = "voicestream-split"
CHUNK_PREFIX = "chunks_"
CHUNK_GLOB = "chunk_*.wav"
MIN_DIGITS = 5

# The dtype that reads and rewrites each encoding without changing a sample:
# libsndfile scales 8-bit and mu/A-law to int16 losslessly, 24-bit into int32.
_EXACT_DTYPE = {
    "PCM_S8": "int16", "PCM_U8": "int16", "PCM_16": "int16", "ULAW": "int16", "ALAW": "int16",
    "PCM_24": "int32", "PCM_32": "int32", "FLOAT": "float32", "DOUBLE": "float64",
}


class SplitError(Exception):
    """A source that cannot be split; the message says why."""


@dataclass(frozen=True)
class SplitConfig:
    inputs: tuple[Path, ...] = ()
    frame_ms: float = 100.0
    out_dir: Path = DATA
    progress: bool = True


@dataclass(frozen=True)
class SplitResult:
    source: Path
    out_dir: Path
    frames: int
    sample_rate: int
    channels: int
    subtype: str
    samples: int

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


def frame_samples(sample_rate: int, frame_ms: float) -> int:
    """Samples in one frame of frame_ms at sample_rate (at least one)."""
    if frame_ms <= 0:
        raise SplitError(f"frame length must be positive, got {frame_ms:g} ms")
    return max(1, round(sample_rate * frame_ms / 1000))


def frame_bounds(total: int, frame_len: int) -> list[tuple[int, int]]:
    """(start, stop) of each frame; the last one may be shorter."""
    if frame_len <= 0:
        raise SplitError(f"frame length must be positive, got {frame_len} samples")
    return [(start, min(start + frame_len, total)) for start in range(0, total, frame_len)]


def split_samples(samples: np.ndarray, frame_len: int) -> list[np.ndarray]:
    """Consecutive frames of frame_len samples (axis 0); views, not copies."""
    return [samples[start:stop] for start, stop in frame_bounds(len(samples), frame_len)]


def chunk_name(index: int, digits: int = MIN_DIGITS) -> str:
    return f"chunk_{index:0{digits}d}.wav"


def chunk_dir_for(source: Path, out_root: Path) -> Path:
    return out_root / f"{CHUNK_PREFIX}{source.stem}"


def split_wav(source: Path, out_dir: Path, frame_ms: float = 100.0, progress: bool = False) -> SplitResult:
    """Write source's frames to out_dir/chunk_00000.wav, ... Stale chunk files
    from an earlier split are removed first, so the directory holds exactly
    this split."""
    if not source.is_file():
        raise SplitError(f"{source}: no such file")
    try:
        info = sf.info(str(source))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise SplitError(f"{source}: not a readable audio file ({exc})") from None
    if info.format not in ("WAV", "WAVEX"):
        raise SplitError(f"{source}: expected a WAV file, got {info.format}")
    dtype = _EXACT_DTYPE.get(info.subtype)
    if dtype is None:
        raise SplitError(f"{source}: unsupported WAV encoding {info.subtype}")
    frame_len = frame_samples(info.samplerate, frame_ms)
    count = math.ceil(info.frames / frame_len)
    digits = max(MIN_DIGITS, len(str(max(count - 1, 0))))

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(CHUNK_GLOB):
        stale.unlink()

    written = total = 0
    with sf.SoundFile(str(source)) as f:
        blocks: Iterator[np.ndarray] = f.blocks(blocksize=frame_len, dtype=dtype, always_2d=True)
        bar = tqdm(blocks, total=count, unit="frame", desc=source.name, disable=not progress, leave=True)
        for block in bar:
            frame = block[:, 0] if info.channels == 1 else block
            sf.write(str(out_dir / chunk_name(written, digits)), frame, info.samplerate,
                     subtype=info.subtype, format=info.format, endian=info.endian)
            written += 1
            total += len(block)
    return SplitResult(source, out_dir, written, info.samplerate, info.channels, info.subtype, total)


def default_inputs(data_dir: Path) -> tuple[Path, ...]:
    return tuple(sorted(data_dir.glob("*.wav")))


def parse_args(argv: Sequence[str] | None = None) -> SplitConfig:
    env = os.environ.get
    data_dir = Path(env("DATA_DIR", str(DATA)))
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Split WAV files into fixed-length WAV frames (same rate, channels and encoding). "
                    "Frames of NAME.wav go to OUT_DIR/chunks_NAME/chunk_00000.wav, chunk_00001.wav, ...; "
                    "the last frame is kept even when shorter. Existing chunk files there are replaced.")
    p.add_argument("inputs", nargs="*", type=Path,
                   help=f"WAV files to split (default: every *.wav in {data_dir} [DATA_DIR])")
    p.add_argument("--frame-ms", type=float, default=float(env("FRAME_MS", "100")),
                   help="frame length in milliseconds (default: %(default)s) [FRAME_MS]")
    p.add_argument("--out-dir", type=Path, default=Path(env("CHUNKS_DIR", str(data_dir))),
                   help="where the chunks_NAME directories are created (default: %(default)s) [CHUNKS_DIR]")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    a = p.parse_args(argv)
    if a.frame_ms <= 0:
        p.error(f"--frame-ms must be positive, got {a.frame_ms:g}")
    inputs = tuple(a.inputs) or default_inputs(data_dir)
    if not inputs:
        p.error(f"no WAV files given and none found in {data_dir}")
    return SplitConfig(inputs, a.frame_ms, a.out_dir, a.progress)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    failed = 0
    for source in config.inputs:
        try:
            result = split_wav(source, chunk_dir_for(source, config.out_dir), config.frame_ms, config.progress)
        except SplitError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{result.source} -> {result.out_dir}/: {result.frames} frames of {config.frame_ms:g} ms "
              f"({result.seconds:.2f} s, {result.sample_rate} Hz, {result.channels} ch, {result.subtype})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
