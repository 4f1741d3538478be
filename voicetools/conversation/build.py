"""Conversations of enrolled speakers and a stranger, cut from a speaker set,
and their reference segments.

Leave one speaker out: the stranger is not enrolled; the others are enrolled
from their first files (by name), which are never streamed. Turns alternate
every participant (shuffled rounds, never twice in a row), each a piece of
the speaker's held-out files continuing where its previous turn stopped, with
a pause of low noise between turns. The reference names the enrolled speakers
and calls the stranger `unknown`; pauses are unlabelled.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from voicestream.wav import FRAME_SECONDS
from voicetools import timeline
from worker.vad import CHUNK_SAMPLES, SileroOnnx, VadEngine, VadParams, VadStream

from . import ConversationError

RATE = 16000              # the speaker set's rate, and the encoders'
UNKNOWN = timeline.UNKNOWN
# Turn lengths: a worker names a voice once it has 1.5 s of speech, then
# holds the previous voice 0.5-1 s into the next turn (docs/timeline.md), so
# 3-6 s turns are where that lag shows without dominating.
TURN_SECONDS = (3.0, 6.0)
# Pauses: under --speaker-reset-seconds (3 s), so the window carries across
# turns as in a lively conversation.
PAUSE_SECONDS = (0.5, 1.5)
NOISE_DBFS = -60.0        # the pauses' noise: a quiet line, not digital silence
# The reference's speech: silero's own rule (VADIterator's defaults: 0.5,
# 100 ms of silence ends speech), fixed here so that tuning the workers' VAD
# moves the hypothesis, never the reference it is scored against.
REFERENCE_VAD = VadParams(threshold=0.5, min_silence_ms=100)


@dataclass(frozen=True, slots=True)
class BuildOptions:
    enroll_files: int = 2
    turns_each: int = 3
    turn_seconds: tuple[float, float] = TURN_SECONDS
    pause_seconds: tuple[float, float] = PAUSE_SECONDS
    seed: int = 0
    reference: str = "speech"  # or "turns": whole turns labelled, silences inside included


@dataclass(frozen=True, slots=True)
class Turn:
    speaker: str                          # the folder's name
    label: str                            # the reference's: the name, or unknown for the stranger
    source: str                           # file the piece was cut from
    source_start: float                   # seconds into that file
    start: float                          # seconds into the conversation
    end: float
    speech: tuple[tuple[float, float], ...]  # where silero hears speech, conversation seconds


@dataclass(frozen=True)
class Conversation:
    uri: str
    stranger: str
    enrolled: dict[str, list[Path]]       # name -> enrollment files
    samples: np.ndarray                   # int16, RATE
    turns: tuple[Turn, ...]
    restarts: int = 0                     # times a speaker's held-out audio ran out and started over

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE

    def reference(self, mode: str = "speech") -> list[timeline.Segment]:
        """Labelled segments: each turn's speech (mode "speech") or whole turn ("turns")."""
        if mode == "turns":
            return [timeline.Segment(t.label, t.start, t.end) for t in self.turns]
        return [timeline.Segment(t.label, start, end) for t in self.turns for start, end in t.speech]


def speaker_files(folder: Path) -> dict[str, list[Path]]:
    """speaker name (sub-folder) -> its WAV files sorted by name."""
    if not folder.is_dir():
        raise ConversationError(f"speaker folder not found: {folder} (expected <folder>/<speaker>/*.wav)")
    found = {d.name: sorted(d.glob("*.wav")) for d in sorted(folder.iterdir()) if d.is_dir()}
    found = {name: files for name, files in found.items() if files}
    if len(found) < 2:
        raise ConversationError(f"{folder} holds {len(found)} speaker folder(s) with WAV files; a conversation "
                                f"with a stranger needs at least 2")
    return found


def read_audio(path: Path) -> np.ndarray:
    """A file's samples as int16 at RATE (the set's rate; nothing is resampled)."""
    try:
        samples, rate = sf.read(path, dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ConversationError(f"{path}: not readable audio: {exc}") from None
    if rate != RATE or samples.shape[1] != 1:
        raise ConversationError(f"{path}: {rate} Hz with {samples.shape[1]} channel(s); the conversation needs "
                                f"{RATE} Hz mono")
    return samples[:, 0]


def split(files: Sequence[Path], enroll_files: int) -> tuple[list[Path], list[Path]]:
    """(enrollment files, held-out files): the first enroll_files by name enroll."""
    if len(files) <= enroll_files:
        raise ConversationError(f"{files[0].parent}: {len(files)} file(s), but --enroll-files {enroll_files} "
                                f"leaves none to stream")
    return list(files[:enroll_files]), list(files[enroll_files:])


def turn_order(participants: Sequence[str], each: int, rng: np.random.Generator) -> list[str]:
    """Every participant each times, in shuffled rounds, never twice in a row."""
    order: list[str] = []
    for _ in range(each):
        round_ = [participants[i] for i in rng.permutation(len(participants))]
        if order and len(round_) > 1 and round_[0] == order[-1]:
            round_[0], round_[1] = round_[1], round_[0]
        order += round_
    return order


def speech_spans(vad: VadEngine, samples: np.ndarray) -> list[tuple[float, float]]:
    """Where silero hears speech in samples alone, in seconds, at its chunk
    resolution (32 ms), by vad's rule (REFERENCE_VAD from vad_engine())."""
    audio = samples.astype(np.float32) / 32768
    stream, piece = VadStream(RATE), RATE // 2
    probs = np.concatenate([vad.process(stream, audio[i:i + piece]).chunk_probs
                            for i in range(0, len(audio), piece)] or [np.empty(0, np.float32)])
    hysteresis = VadStream(RATE)
    voiced = [hysteresis.decide(probs[i:i + 1], vad.params)[0] for i in range(len(probs))]
    chunk = CHUNK_SAMPLES[RATE] / RATE
    spans: list[tuple[float, float]] = []
    for i, v in enumerate(voiced):
        if not v:
            continue
        if spans and abs(spans[-1][1] - i * chunk) < 1e-9:
            spans[-1] = (spans[-1][0], (i + 1) * chunk)
        else:
            spans.append((i * chunk, (i + 1) * chunk))
    return spans


def noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    rms = 32768 * 10 ** (NOISE_DBFS / 20)
    return np.clip(rng.normal(0, rms, int(round(seconds * RATE))), -32768, 32767).astype(np.int16)


class Pieces:
    """One speaker's held-out audio, handed out turn by turn from where the
    last turn stopped; a file's rest shorter than a turn's minimum is skipped,
    and when every file is used up it starts over (counted in restarts)."""

    def __init__(self, files: Sequence[Path], shortest: float) -> None:
        self.audio = [(f, read_audio(f)) for f in files]
        self.shortest = int(shortest * RATE)
        self.file, self.offset, self.restarts = 0, 0, 0
        if all(len(a) < self.shortest for _, a in self.audio):
            raise ConversationError(f"{files[0].parent}: every held-out file is shorter than a turn "
                                    f"({shortest:g} s)")

    def take(self, seconds: float) -> tuple[Path, float, np.ndarray]:
        while len(self.audio[self.file][1]) - self.offset < self.shortest:
            self.file, self.offset = self.file + 1, 0
            if self.file == len(self.audio):
                self.file, self.restarts = 0, self.restarts + 1
        path, audio = self.audio[self.file]
        start = self.offset
        piece = audio[start:start + int(seconds * RATE)]
        self.offset += len(piece)
        return path, start / RATE, piece


def build(stranger: str, speakers: Mapping[str, Sequence[Path]], options: BuildOptions, vad: VadEngine,
          fold: int = 0, uri: str | None = None) -> Conversation:
    """The conversation of one fold: stranger is not enrolled, the others are
    from their first files; turns alternate all of them with pauses between."""
    if stranger not in speakers:
        raise ConversationError(f"no speaker {stranger!r} in the folder: choose from {', '.join(speakers)}")
    low, high = options.turn_seconds
    if not 0 < low <= high or not 0 <= options.pause_seconds[0] <= options.pause_seconds[1]:
        raise ConversationError(f"turn lengths {options.turn_seconds} and pauses {options.pause_seconds} must be "
                                f"ordered (min <= max), turns longer than 0")
    rng = np.random.default_rng([options.seed, fold])  # a fold is the same whichever others run
    enrolled, pieces = {}, {}
    for name, files in speakers.items():
        enroll, held_out = split(files, options.enroll_files)
        if name != stranger:
            enrolled[name] = enroll
        pieces[name] = Pieces(held_out, low)
    parts: list[np.ndarray] = [noise(options.pause_seconds[0], rng)]  # the line is open before anyone speaks
    turns, at = [], len(parts[0])
    for name in turn_order(list(speakers), options.turns_each, rng):
        path, source_start, piece = pieces[name].take(float(rng.uniform(low, high)))
        start = at / RATE
        speech = tuple((start + a, start + b) for a, b in speech_spans(vad, piece))
        label = UNKNOWN if name == stranger else name
        turns.append(Turn(name, label, str(path), source_start, start, start + len(piece) / RATE, speech))
        pause = noise(float(rng.uniform(*options.pause_seconds)), rng)
        parts += [piece, pause]
        at += len(piece) + len(pause)
    samples = np.concatenate(parts)
    frame = int(FRAME_SECONDS * RATE)  # whole frames only: the stream's last frame is not cut
    samples = np.concatenate([samples, noise((-len(samples) % frame) / RATE, rng)])
    return Conversation(uri or f"conversation-{stranger}", stranger, enrolled, samples, tuple(turns),
                        sum(p.restarts for p in pieces.values()))


def rttm(uri: str, segments: Sequence[timeline.Segment]) -> str:
    """RTTM text (voicetools.timeline's lines), unknown kept: here it is the stranger's label."""
    return "".join(line + "\n" for line in timeline.rttm_lines(uri, segments, keep_unknown=True))


def vad_engine() -> VadEngine:
    return VadEngine(SileroOnnx(), REFERENCE_VAD)




# --- the real conversation of ../shared/data/conversation -----------------------------

def rttm_turns(path: Path) -> list[tuple[str, float, float]]:
    """(speaker, start, end) of each SPEAKER line of an RTTM file, by start."""
    turns = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        try:
            start, duration, name = float(fields[3]), float(fields[4]), fields[7]
        except (IndexError, ValueError):
            raise ConversationError(f"{path}:{number}: not an RTTM SPEAKER line: {line[:80]!r}") from None
        turns.append((name, start, start + duration))
    if not turns:
        raise ConversationError(f"{path}: no SPEAKER lines")
    return sorted(turns, key=lambda t: t[1])


def solo_spans(turns: Sequence[tuple[str, float, float]], name: str) -> list[tuple[float, float]]:
    """Where name speaks and nobody else does."""
    spans: list[tuple[float, float]] = []
    for who, start, end in turns:
        if who != name:
            continue
        pieces = [(start, end)]
        for other, a, b in turns:
            if other == name:
                continue
            pieces = [p for x, y in pieces for p in ((x, min(y, a)), (max(x, b), y)) if p[1] - p[0] > 1e-9]
        spans += pieces
    return spans


def recorded(wav: Path, rttm_path: Path, out_dir: Path, uri: str = "real") -> Conversation:
    """A recorded conversation with its reference: each speaker enrolled from
    where only they speak in it (which leaks: the streamed audio contains the
    enrollment audio), the whole recording streamed, the RTTM's segments the
    reference."""
    samples = read_audio(wav)
    turns_rttm = rttm_turns(rttm_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    enrolled: dict[str, list[Path]] = {}
    for name in sorted({t[0] for t in turns_rttm}):
        spans = solo_spans(turns_rttm, name)
        audio = np.concatenate([samples[int(a * RATE):int(b * RATE)] for a, b in spans])
        path = out_dir / f"{uri}-{name}-solo.wav"
        sf.write(path, audio, RATE, subtype="PCM_16")
        enrolled[name] = [path]
    frame = int(FRAME_SECONDS * RATE)
    samples = samples[:len(samples) - len(samples) % frame]
    turns = tuple(Turn(name, name, str(wav), start, start, end, ((start, end),)) for name, start, end in turns_rttm)
    return Conversation(uri, "", enrolled, samples, turns)
