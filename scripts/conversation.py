#!/usr/bin/env python3
"""A conversation benchmark: who spoke when, scored with pyannote.metrics.

    python scripts/conversation.py                                   # GE2E, ../shared/data/speakers
    python scripts/conversation.py --encoders ge2e,ecapa --ecapa-source /models/spkrec-ecapa-voxceleb
    python scripts/conversation.py --strangers speaker_1 --turns-each 1 --json-out conv.json

Leave one speaker out: each speaker of the folder in turn is the stranger.
The others are enrolled from their first --enroll-files files (sorted by
name), never streamed; the conversation alternates pieces of their other
files and of the stranger's, with a short pause of low noise between turns
(seeded). It is streamed through a real balancer and worker(s) started by
scripts/cluster.py, one 100 ms frame at a time, each sent once the previous
one is answered (as fast as replies come: speaker state follows the audio,
not the wall clock). The hypothesis is the account's frame log read by
scripts/timeline.py (speaker per frame, in audio time); the reference names
the enrolled speakers and calls the stranger `unknown`, pauses unlabelled.
Both are written as RTTM to --out-dir and scored with pyannote.metrics'
IdentificationErrorRate (collar --collar seconds), per fold and overall.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

import timeline  # noqa: E402
from cluster import SPEAKERS, System, make_system, wait_until  # noqa: E402
from voicestream.wav import FRAME_SECONDS, encode_wav  # noqa: E402
from worker.vad import CHUNK_SAMPLES, SileroOnnx, VadEngine, VadParams, VadStream  # noqa: E402

RATE = 16000              # the speaker set's rate, and the encoders'
UNKNOWN = timeline.UNKNOWN
ENCODERS = ("ge2e", "ecapa")
# The collar: seconds either side of each reference boundary left unscored
# (md-eval's -c; pyannote's collar is the whole width, twice this). The
# reference's boundaries are silero's 32 ms chunks, the hypothesis's 100 ms
# frames, so the same speech can start up to 0.1 s apart.
COLLAR = 0.25
# Turn lengths: a worker names a voice once it has 1.5 s of speech, then
# holds the previous voice 0.5-1 s into the next turn (docs/timeline.md), so
# 3-6 s turns are where that lag shows without dominating.
TURN_SECONDS = (3.0, 6.0)
# Pauses: under --speaker-reset-seconds (3 s), so the window carries across
# turns as in a lively conversation.
PAUSE_SECONDS = (0.5, 1.5)
NOISE_DBFS = -60.0        # the pauses' noise: a quiet line, not digital silence
REPLY_TIMEOUT = 60.0


class ConversationError(RuntimeError):
    """Bad input or a system that could not be measured; the message says which."""


# ---------------------------------------------------------------- conversations

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
    reused: int = 0                       # turns that had to reuse a speaker's audio

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
    resolution (32 ms), with the worker's thresholds and hysteresis."""
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
    and when every file is used up it starts over (counted as reused)."""

    def __init__(self, files: Sequence[Path], shortest: float) -> None:
        self.audio = [(f, read_audio(f)) for f in files]
        self.shortest = int(shortest * RATE)
        self.file, self.offset, self.reused = 0, 0, 0
        if all(len(a) < self.shortest for _, a in self.audio):
            raise ConversationError(f"{files[0].parent}: every held-out file is shorter than a turn "
                                    f"({shortest:g} s)")

    def take(self, seconds: float) -> tuple[Path, float, np.ndarray]:
        while len(self.audio[self.file][1]) - self.offset < self.shortest:
            self.file, self.offset = self.file + 1, 0
            if self.file == len(self.audio):
                self.file, self.reused = 0, self.reused + 1
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
                        sum(p.reused for p in pieces.values()))


def rttm(uri: str, segments: Sequence[timeline.Segment]) -> str:
    """RTTM text (timeline.py's lines), unknown kept: here it is the stranger's label."""
    return "".join(line + "\n" for line in timeline.rttm_lines(uri, segments, keep_unknown=True))


def vad_engine() -> VadEngine:
    return VadEngine(SileroOnnx(), VadParams())


# ---------------------------------------------------------------- the system

def http(url: str, method: str = "GET", data: bytes | None = None, timeout: float = 120) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "audio/wav"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.load(exc)
        except ValueError:
            return exc.code, {"error": exc.reason}
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"error": str(exc)}


def worker_args(encoder: str, root: Path, ecapa_source: str | None) -> list[str]:
    args = ["--encoder", encoder, "--store", str(root / "voiceprints.db"), "--activity-log", str(root / "activity.log")]
    return args + (["--ecapa-source", ecapa_source] if encoder == "ecapa" and ecapa_source else [])


def start(encoder: str, root: Path, ecapa_source: str | None, workers: int) -> System:
    """A balancer and workers with encoder, their encoders loaded; raises
    ConversationError (the system stopped) when the encoder cannot load."""
    system = make_system(root, n_workers=workers, worker_args=worker_args(encoder, root, ecapa_source))
    system.start()
    try:
        for i in range(workers):
            statuses: list[dict] = []

            def loaded(i: int = i, statuses: list[dict] = statuses) -> bool:
                status, body = http(f"{system.worker_url(i)}/health", timeout=5)
                if status == 200 and body["speakers"]["state"] != "loading":
                    statuses.append(body["speakers"])
                    return True
                return False
            # A first GE2E export takes about 30 s; an ECAPA one longer.
            wait_until(loaded, 600, f"worker {i} to load its {encoder} encoder", interval=0.2)
            if statuses[-1]["state"] != "ready":
                raise ConversationError(f"{encoder} encoder unavailable: {statuses[-1].get('reason', statuses[-1])}")
    except BaseException:
        system.stop()
        raise
    return system


def enroll(system: System, account: str, enrolled: Mapping[str, Sequence[Path]]) -> None:
    for name, files in enrolled.items():
        for path in files:
            status, body = http(f"{system.url}/accounts/{account}/speakers/{name}", "POST", path.read_bytes())
            if not 200 <= status < 300:
                raise ConversationError(f"enrolling {name} from {path} failed: {status} {body}")


def stream(url: str, account: str, samples: np.ndarray) -> list[dict]:
    """Every 100 ms frame over one WebSocket, each sent once the previous one
    is answered; the replies in order."""
    return asyncio.run(_stream(url, account, samples))


async def _stream(url: str, account: str, samples: np.ndarray) -> list[dict]:
    n = int(FRAME_SECONDS * RATE)
    replies = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for start in range(0, len(samples) - n + 1, n):
            await ws.send_str(f"ACCOUNTCODE={account}")
            await ws.send_bytes(encode_wav(samples[start:start + n], RATE))
            reply = await ws.receive_json(timeout=REPLY_TIMEOUT)
            if "error" in reply:
                raise ConversationError(f"frame {start // n} of {account} was refused: {reply['error']}")
            replies.append(reply)
        await ws.send_str("CLOSE")
    return replies


def hypothesis(system: System, account: str, replies: Sequence[dict]) -> list[timeline.Segment]:
    """The account's frame log as speaker segments in audio time (timeline.py),
    checked against the replies: one line per frame, the same speakers."""
    path = system.log_dir / f"{account}.txt"
    lines, skipped = timeline.read_lines(path.read_text(encoding="utf-8", errors="replace").splitlines())
    logged = [line.speaker for line in lines]
    answered = [reply.get("speaker") for reply in replies]
    if skipped or logged != answered:
        raise ConversationError(f"{path}: {len(lines)} frame line(s) ({skipped} other) for {len(replies)} "
                                f"replies, or other speakers than the replies named")
    frames = timeline.to_frames(lines, FRAME_SECONDS, clock="frames")
    return timeline.segments(frames, gap_seconds=float("inf"))


# ---------------------------------------------------------------- scoring

@dataclass
class Score:
    """IdentificationErrorRate's components, in seconds of reference speech."""
    speech: float           # the reference's labelled time (pyannote's "total")
    confusion: float
    missed: float
    false_alarm: float
    correct: float

    @property
    def ier(self) -> float:
        return (self.confusion + self.missed + self.false_alarm) / self.speech if self.speech else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "ier": self.ier}


def total(scores: Sequence[Score]) -> Score:
    """Several conversations as one: components summed (what pyannote's abs(metric) gives)."""
    return Score(*(sum(column) for column in zip(*(astuple(s) for s in scores), strict=True)))


def annotation(uri: str, segments: Sequence[timeline.Segment]) -> Any:
    from pyannote.core import Annotation, Segment
    out = Annotation(uri=uri)
    for i, s in enumerate(segments):
        out[Segment(s.start, s.end), i] = s.speaker
    return out


def score(uri: str, reference: Sequence[timeline.Segment], hypothesis: Sequence[timeline.Segment],
          seconds: float, collar: float = COLLAR) -> Score:
    """pyannote.metrics' identification error rate over the whole conversation
    (its uem: 0 to seconds), collar seconds either side of every reference
    boundary ignored."""
    try:
        from pyannote.core import Segment, Timeline
        from pyannote.metrics.identification import IdentificationErrorRate
    except ImportError:
        raise ConversationError("pyannote.metrics is not installed: pip install -r requirements.txt "
                                "(or '.[scripts]')") from None
    metric = IdentificationErrorRate(collar=2 * collar)  # pyannote's collar: the whole width
    parts = metric(annotation(uri, reference), annotation(uri, hypothesis), detailed=True,
                   uem=Timeline([Segment(0, seconds)], uri=uri))
    return Score(parts["total"], parts["confusion"], parts["missed detection"], parts["false alarm"],
                 parts["correct"])


NONE = "(none)"  # no decision: silence, or speech before the first decision


def who_for_whom(reference: Sequence[timeline.Segment],
                 hypothesis: Sequence[timeline.Segment]) -> dict[str, dict[str, float]]:
    """Seconds of each reference label that the hypothesis gave each label
    (NONE: no decision), no collar: who was taken for whom."""
    out: dict[str, dict[str, float]] = {}
    for ref in reference:
        row = out.setdefault(ref.speaker, {})
        covered = 0.0
        for hyp in hypothesis:
            overlap = min(ref.end, hyp.end) - max(ref.start, hyp.start)
            if overlap > 0:
                row[hyp.speaker] = row.get(hyp.speaker, 0.0) + overlap
                covered += overlap
        row[NONE] = row.get(NONE, 0.0) + ref.seconds - covered
    return {ref: {hyp: round(seconds, 3) for hyp, seconds in sorted(row.items())} for ref, row in sorted(out.items())}


def stranger_named(matrix: Mapping[str, Mapping[str, float]]) -> tuple[float, float]:
    """(seconds of the stranger's speech given an enrolled name, seconds of the stranger's speech)."""
    row = matrix.get(UNKNOWN, {})
    return sum(v for k, v in row.items() if k not in (UNKNOWN, NONE)), sum(row.values())


# ---------------------------------------------------------------- one run

@dataclass
class Fold:
    encoder: str
    stranger: str
    account: str
    seconds: float
    turns: int
    reused: int
    score: Score
    reference_rttm: str
    hypothesis_rttm: str
    labels: list[str] = field(default_factory=list)   # the hypothesis's
    matrix: dict[str, dict[str, float]] = field(default_factory=dict)  # who_for_whom

    def as_dict(self) -> dict:
        named, spoke = stranger_named(self.matrix)
        return {"encoder": self.encoder, "stranger": self.stranger, "account": self.account,
                "seconds": round(self.seconds, 3), "turns": self.turns, "reused_turns": self.reused,
                "labels": self.labels, "reference_rttm": self.reference_rttm,
                "hypothesis_rttm": self.hypothesis_rttm, **self.score.as_dict(),
                "stranger_seconds": round(spoke, 3), "stranger_named_seconds": round(named, 3),
                "who_for_whom": self.matrix}


def run_encoder(encoder: str, a: argparse.Namespace, speakers: Mapping[str, Sequence[Path]], strangers: list[str],
                vad: VadEngine, root: Path) -> list[Fold]:
    options = build_options(a)
    out_dir = a.out_dir / encoder
    out_dir.mkdir(parents=True, exist_ok=True)
    folds = []
    system = start(encoder, root / encoder, a.ecapa_source, a.workers)
    try:
        for stranger in strangers:
            fold = list(speakers).index(stranger)
            account = f"conv-{encoder}-{fold}-{int(time.time())}"  # a fresh account: no one enrolled yet
            conversation = build(stranger, speakers, options, vad, fold, uri=f"{encoder}-{stranger}")
            enroll(system, account, conversation.enrolled)
            replies = stream(system.ws_url, account, conversation.samples)
            reference = conversation.reference(options.reference)
            hyp = hypothesis(system, account, replies)
            ref_path, hyp_path = out_dir / f"{stranger}.ref.rttm", out_dir / f"{stranger}.hyp.rttm"
            ref_path.write_text(rttm(conversation.uri, reference))
            hyp_path.write_text(rttm(conversation.uri, hyp))
            result = score(conversation.uri, reference, hyp, conversation.seconds, a.collar)
            folds.append(Fold(encoder, stranger, account, conversation.seconds, len(conversation.turns),
                              conversation.reused, result, str(ref_path), str(hyp_path),
                              sorted({s.speaker for s in hyp}), who_for_whom(reference, hyp)))
            print(row(encoder, stranger, result, stranger_named(folds[-1].matrix)), file=sys.stderr, flush=True)
    finally:
        system.stop()
    return folds


def build_options(a: argparse.Namespace) -> BuildOptions:
    return BuildOptions(a.enroll_files, a.turns_each, tuple(a.turn_seconds), tuple(a.pause_seconds), a.seed,
                        a.reference)


HEADER = (f"{'encoder':<8} {'stranger':<12} {'scored s':>8} {'IER':>6} {'confusion':>9} {'missed':>7} "
          f"{'false al.':>9} {'stranger named':>14}")


def row(encoder: str, stranger: str, s: Score, named: tuple[float, float]) -> str:
    """Components as % of the scored reference speech; the stranger's speech
    given an enrolled name as % of the stranger's speech."""
    def pct(x: float, of: float) -> str:
        return f"{100 * x / of:.1f}%" if of else "-"
    return (f"{encoder:<8} {stranger:<12} {s.speech:>8.1f} {pct(s.ier * s.speech, s.speech):>6} "
            f"{pct(s.confusion, s.speech):>9} {pct(s.missed, s.speech):>7} {pct(s.false_alarm, s.speech):>9} "
            f"{pct(*named):>14}")


def table(folds: Sequence[Fold]) -> str:
    """A row per fold, then each encoder's total over its folds (components summed)."""
    lines = [HEADER]
    for encoder in dict.fromkeys(f.encoder for f in folds):
        mine = [f for f in folds if f.encoder == encoder]
        named = [stranger_named(f.matrix) for f in mine]
        lines += [row(encoder, f.stranger, f.score, n) for f, n in zip(mine, named, strict=True)]
        lines.append(row(encoder, "all", total([f.score for f in mine]),
                         (sum(n for n, _ in named), sum(s for _, s in named))))
    return "\n".join(lines)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    try:
        values = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX in seconds, got {text!r}") from None
    if not 0 <= values[0] <= values[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= MIN <= MAX, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/conversation.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folder", nargs="?", type=Path, default=SPEAKERS, help="speaker folders of WAVs (16 kHz mono)")
    p.add_argument("--encoders", default="ge2e", help="comma-separated, of: " + ", ".join(ENCODERS))
    p.add_argument("--ecapa-source", help="ECAPA's hub id or local directory (the workers' --ecapa-source)")
    p.add_argument("--strangers", help="comma-separated speaker names to run as the stranger (default: each)")
    p.add_argument("--enroll-files", type=int, default=2, help="first files (by name) of a speaker to enroll from")
    p.add_argument("--turns-each", type=int, default=3, help="turns per participant in a conversation")
    p.add_argument("--turn-seconds", type=pair, default=TURN_SECONDS, metavar="MIN,MAX",
                   help="length of a turn, drawn uniformly")
    p.add_argument("--pause-seconds", type=pair, default=PAUSE_SECONDS, metavar="MIN,MAX",
                   help=f"noise ({NOISE_DBFS:g} dBFS) between turns, drawn uniformly")
    p.add_argument("--reference", choices=("speech", "turns"), default="speech",
                   help="reference segments: where silero hears speech in each turn, or whole turns")
    p.add_argument("--collar", type=float, default=COLLAR,
                   help="seconds either side of each reference boundary not scored (md-eval's -c; pyannote's "
                        "collar is twice this)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="workers of the system measured")
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench-results" / "conversation",
                   help="RTTM files: <out-dir>/<encoder>/<stranger>.{ref,hyp}.rttm")
    p.add_argument("--json-out", type=Path, help="write every fold's figures here as JSON")
    a = p.parse_args(argv)
    a.encoders = [e.strip() for e in a.encoders.split(",") if e.strip()]
    unknown = [e for e in a.encoders if e not in ENCODERS]
    if unknown or not a.encoders:
        p.error(f"--encoders: unknown encoder(s) {', '.join(unknown) or '(none given)'}; use {', '.join(ENCODERS)}")
    if a.enroll_files < 1 or a.turns_each < 1 or a.workers < 1 or a.collar < 0:
        p.error("--enroll-files, --turns-each and --workers must be at least 1, --collar at least 0")
    if a.turn_seconds[0] <= 0:
        p.error("--turn-seconds: a turn must last more than 0 s")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        speakers = speaker_files(a.folder)
        strangers = list(speakers) if a.strangers is None else [s.strip() for s in a.strangers.split(",")]
        missing = [s for s in strangers if s not in speakers]
        if missing:
            raise ConversationError(f"--strangers: no speaker {', '.join(missing)} in {a.folder}; "
                                    f"choose from {', '.join(speakers)}")
        vad = vad_engine()
        folds: list[Fold] = []
        print(HEADER, file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="conversation-") as tmp:
            for encoder in a.encoders:
                folds += run_encoder(encoder, a, speakers, strangers, vad, Path(tmp))
    except ConversationError as exc:
        print(f"conversation.py: {exc}", file=sys.stderr)
        return 2
    print(table(folds))
    print(f"collar ±{a.collar:g} s, reference: {a.reference}, commit {commit()}")
    if a.json_out is not None:
        totals = {e: total([f.score for f in folds if f.encoder == e]).as_dict() for e in a.encoders}
        a.json_out.parent.mkdir(parents=True, exist_ok=True)
        a.json_out.write_text(json.dumps({
            "commit": commit(), "folder": str(a.folder), "collar": a.collar, "reference": a.reference,
            "options": {k: v for k, v in asdict(build_options(a)).items()},
            "ecapa_source": a.ecapa_source, "workers": a.workers,
            "folds": [f.as_dict() for f in folds], "overall": totals}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
