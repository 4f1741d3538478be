"""Calibrate speaker verification on a folder of speaker_x/*.wav recordings.

Everything runs through the worker's own code: the served ONNX graph
(worker/speakers/loader.py, exported in a subprocess when missing), the
worker's VAD, SpeakerService.enroll and .verify (what POST
/accounts/<code>/speakers/<name> and /verify do), the streaming embeddings a
worker decides on while a recording streams in 100 ms frames
(worker.speakers.streaming.stream_embeddings) and scoring.decide.

1. Closed set (EER table). Every speaker is enrolled from its first
   --enroll-files WAVs (sorted by name); the rest are scored as streaming
   decisions and as whole files. Printed per encoder and window: trials, EER,
   the threshold at the EER, identification accuracy (best score is the right
   speaker) and the accuracy of the decision at that threshold. "2 s" rows
   count only decisions on a full window (from 2 s of speech of a turn on);
   the "live" row every decision a worker makes with its window.

2. Leave one speaker out (unknown speakers): for each speaker in turn, the
   other speakers are enrolled (first --enroll-files each) and the stranger is
   streamed with the others' held-out files. Per fold: how many decisions on
   enrolled speakers name the right one, how many on the stranger are
   "unknown", and how many of the stranger's files /verify rejects (and of
   the held-out files it names right). The worker's threshold, window and
   first decision (worker.speakers.tracker.MIN_WINDOW_SECONDS) unless told.

3. --methods: the same protocol for the rejection methods of the field, each
   with its threshold chosen without the fold it is tested on (on the other
   folds: the threshold that best balances identification and rejection
   there), so no figure is tuned to the data it reports: the raw cosine, a
   margin over the second-best speaker, adaptive S-norm against a cohort (the
   project's espeak-ng voices in data/cohort/ plus the account's other
   speakers), more speech before the first decision, longer windows.

--write-config FILE merges SPEAKER_ENCODER and SPEAKER_THRESHOLD (the
threshold at EER of the live row) into a dotenv file. Workers read both from
the environment; honcho loads .env next to the Procfile by itself:

    .venv/bin/voicestream-calibrate --encoders ge2e --write-config .env

Example:
    .venv/bin/voicestream-calibrate ../shared/data/speakers --encoders ge2e --methods
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from voicetools.paths import DATA, MODELS, SPEAKERS
from worker.audio import Audio, decode_wav, to_16k
from worker.speakers.encoders import DEFAULT_THRESHOLDS, Encoder, Unavailable
from worker.speakers.engine import SpeakerEngine
from worker.speakers.loader import load_onnx_encoder
from worker.speakers.scoring import UNKNOWN, Enrolled, Roster, decide
from worker.speakers.service import SpeakerError, SpeakerService
from worker.speakers.streaming import stream_embeddings
from worker.speakers.tracker import MIN_WINDOW_SECONDS
from worker.storage.sqlite import SqliteVoiceprintStore
from worker.storage.voiceprints import EncoderId
from worker.vad import SileroOnnx, VadEngine, VadParams, voiced_samples

PROG = "voicestream-calibrate"
WHOLE = "whole"
COHORT = DATA / "cohort"
# Threshold candidates for choosing one on the other folds, per score scale.
COSINE_GRID = np.round(np.arange(0.50, 0.90, 0.005), 3)
SNORM_GRID = np.round(np.arange(-1.0, 8.0, 0.05), 2)


@dataclass(frozen=True)
class Result:
    encoder: str
    window: str
    targets: int
    nontargets: int
    eer: float
    threshold: float
    ident_accuracy: float
    decision_accuracy: float


def eer(target: np.ndarray, nontarget: np.ndarray) -> tuple[float, float]:
    """(equal error rate, threshold at it). A trial is accepted when its score
    is >= the threshold; the threshold is placed between the two scores where
    the false-accept and false-reject rates cross."""
    target, nontarget = np.sort(np.asarray(target, float)), np.sort(np.asarray(nontarget, float))
    if len(target) == 0 or len(nontarget) == 0:
        raise ValueError("EER needs target and non-target trials")
    candidates = np.unique(np.concatenate((target, nontarget, [np.inf])))
    frr = np.searchsorted(target, candidates, side="left") / len(target)        # targets below t
    far = 1 - np.searchsorted(nontarget, candidates, side="left") / len(nontarget)  # non-targets >= t
    i = int(np.argmin(np.abs(far - frr)))
    rate = (far[i] + frr[i]) / 2
    # Midway between this candidate and the next lower score reads better and
    # generalizes better than a threshold sitting exactly on a trial's score.
    lower = candidates[i - 1] if i > 0 else candidates[i]
    threshold = candidates[i] if not np.isfinite(candidates[i]) else (candidates[i] + lower) / 2
    return float(rate), float(threshold if np.isfinite(threshold) else candidates[-2])


def speaker_files(folder: Path) -> dict[str, list[Path]]:
    speakers = {d.name: sorted(d.glob("*.wav")) for d in sorted(folder.iterdir()) if d.is_dir()}
    return {name: files for name, files in speakers.items() if files}


def read_wav(path: Path) -> Audio:
    return decode_wav(path.read_bytes(), max_seconds=float("inf"))


# --- the worker's code, run on recordings -------------------------------------

class Lab:
    """One encoder with the worker's VAD, service and store (a temporary
    SQLite file): enrollment, /verify and streaming decisions as a worker
    makes them. Embeddings of a recording are computed once."""

    def __init__(self, encoder: Encoder, vad: VadEngine, store: SqliteVoiceprintStore, threshold: float,
                 min_enroll_seconds: float, hop: float) -> None:
        self.encoder, self.vad, self.store, self.hop = encoder, vad, store, hop
        self.encoder_id = EncoderId(encoder.name, encoder.model, encoder.dim)
        self.service = SpeakerService(SpeakerEngine(encoder.name, lambda: encoder), store, vad, None, threshold,
                                      min_enroll_seconds)
        assert self.service.engine is not None and self.service.engine.wait_loaded(60)
        self.roster = Roster(store)
        self._streams: dict[tuple[Path, float, float], np.ndarray] = {}
        self._whole: dict[Path, np.ndarray] = {}

    @property
    def threshold(self) -> float:
        return self.service.threshold

    def enroll(self, account: str, speakers: dict[str, list[Path]]) -> Enrolled | None:
        for name, files in speakers.items():
            for path in files:
                try:
                    self.service.enroll(account, name, read_wav(path))
                except SpeakerError as exc:
                    print(f"  skip enrollment {path}: {exc.message}", file=sys.stderr)
        return self.roster.enrolled(account, self.encoder_id)

    def verify(self, account: str, path: Path) -> dict | None:
        """What POST /accounts/<account>/verify answers for the file; None
        when it has too little speech."""
        try:
            return self.service.verify(account, read_wav(path))
        except SpeakerError as exc:
            print(f"  no /verify of {path}: {exc.message}", file=sys.stderr)
            return None

    def stream(self, path: Path, window: float, min_seconds: float) -> np.ndarray:
        """The embeddings a worker decides on while the file streams (one turn)."""
        key = (path, window, min_seconds)
        if key not in self._streams:
            e = stream_embeddings(self.encoder, self.vad, read_wav(path), window, self.hop, min_seconds)
            self._streams[key] = e.reshape(-1, self.encoder.dim)
        return self._streams[key]

    def whole(self, path: Path) -> np.ndarray:
        """The file's voiced audio embedded in one piece, as /verify does."""
        if path not in self._whole:
            audio = read_wav(path)
            voiced = to_16k(Audio(voiced_samples(self.vad, audio), audio.sample_rate))
            self._whole[path] = self.encoder.embed_batch([voiced])[0]
        return self._whole[path]


@contextmanager
def lab(encoder: Encoder, vad: VadEngine, threshold: float, min_enroll_seconds: float, hop: float) -> Iterator[Lab]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Lab(encoder, vad, SqliteVoiceprintStore(Path(tmp) / "calibration.db"), threshold, min_enroll_seconds, hop)


# --- 1. closed set --------------------------------------------------------------

def score(encoder: str, names: list[str], matrix: np.ndarray, labels: list[str], embeddings: np.ndarray,
          window: str) -> Result:
    scores = embeddings @ matrix.T  # (trials, speakers)
    truth = np.array([names.index(label) for label in labels])
    is_target = np.zeros_like(scores, bool)
    is_target[np.arange(len(truth)), truth] = True
    rate, threshold = eer(scores[is_target], scores[~is_target])
    best = scores.argmax(axis=1)
    ident = float((best == truth).mean())
    decided = float(((best == truth) & (scores.max(axis=1) >= threshold)).mean())
    return Result(encoder, window, int(is_target.sum()), int((~is_target).sum()), rate, threshold, ident, decided)


def live_label(seconds: float) -> str:
    return f"live {seconds:g} s"


def closed_set(lab: Lab, speakers: dict[str, list[Path]], enroll_files: int, windows: list[float],
               live_window: float) -> list[Result]:
    enrolled = lab.enroll("closed-set", {name: files[:enroll_files] for name, files in speakers.items()})
    if enrolled is None:
        print(f"{lab.encoder.name}: no speaker had enough speech in a file to enroll", file=sys.stderr)
        return []
    names, matrix = list(enrolled.names), enrolled.matrix
    tests = [(name, path) for name, files in speakers.items() if name in names for path in files[enroll_files:]]
    # Full windows: decisions from window seconds of a turn's speech on. Live:
    # every decision, from MIN_WINDOW_SECONDS on.
    runs = [(seconds, seconds, f"{seconds:g} s") for seconds in windows]
    runs.append((live_window, MIN_WINDOW_SECONDS, live_label(live_window)))
    results = []
    for window, first, label in runs:
        rows = [(name, lab.stream(path, window, first)) for name, path in tests]
        labels = [name for name, e in rows for _ in range(len(e))]
        if labels:
            results.append(score(lab.encoder.name, names, matrix, labels, np.concatenate([e for _, e in rows]),
                                 label))
    whole = [(name, lab.whole(path)) for name, path in tests]
    results.append(score(lab.encoder.name, names, matrix, [n for n, _ in whole], np.stack([e for _, e in whole]),
                         WHOLE))
    return results


def table(results: list[Result]) -> str:
    head = f"{'encoder':8} {'window':>7} {'trials tgt/non':>15} {'EER':>7} {'thr@EER':>8} {'ident':>7} {'decide':>7}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.encoder:8} {r.window:>7} {f'{r.targets}/{r.nontargets}':>15} {r.eer:7.1%} "
                     f"{r.threshold:8.3f} {r.ident_accuracy:7.1%} {r.decision_accuracy:7.1%}")
    return "\n".join(lines)


# --- 2. leave one speaker out ---------------------------------------------------

@dataclass(frozen=True)
class Fold:
    """One fold: the stranger, the enrolled speakers and what is tested."""
    stranger: str
    enrolled: Enrolled
    held_out: list[tuple[str, Path]]  # (enrolled speaker, file not enrolled from)
    stranger_files: list[Path]


@dataclass(frozen=True)
class Outcome:
    """Counts of one fold (or all). Decisions: one per hop of voiced speech,
    each held by the voiced frames that follow it."""
    stranger: str
    enrolled_decisions: int
    identified: int
    stranger_decisions: int
    unknown: int
    stranger_files: int
    rejected_files: int
    held_out_files: int
    verified_files: int  # held-out files /verify names right
    threshold: float | None = None

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome("all", *(a + b for a, b in zip(self.counts(), other.counts(), strict=True)))

    def counts(self) -> tuple[int, ...]:
        return (self.enrolled_decisions, self.identified, self.stranger_decisions, self.unknown,
                self.stranger_files, self.rejected_files, self.held_out_files, self.verified_files)

    @property
    def identified_share(self) -> float:
        return self.identified / max(self.enrolled_decisions, 1)

    @property
    def unknown_share(self) -> float:
        return self.unknown / max(self.stranger_decisions, 1)

    def balance(self) -> float:
        return min(self.identified_share, self.unknown_share)


def make_folds(lab: Lab, speakers: dict[str, list[Path]], enroll_files: int) -> list[Fold]:
    folds = []
    for stranger in speakers:
        others = {n: files for n, files in speakers.items() if n != stranger}
        enrolled = lab.enroll(f"loso-{stranger}", {n: files[:enroll_files] for n, files in others.items()})
        if enrolled is None or len(enrolled.names) < len(others):
            print(f"fold {stranger}: not every other speaker could be enrolled; fold left out", file=sys.stderr)
            continue
        held_out = [(n, p) for n, files in others.items() for p in files[enroll_files:]]
        folds.append(Fold(stranger, enrolled, held_out, speakers[stranger]))
    return folds


def streamed_fold(lab: Lab, fold: Fold, window: float, first: float, threshold: float) -> Outcome:
    """The fold with the worker's own decisions and its /verify."""
    account = f"loso-{fold.stranger}"
    identified = enrolled_decisions = unknown = stranger_decisions = 0
    rejected = verified = 0
    for name, path in fold.held_out:
        decisions = [decide(fold.enrolled, e, threshold).speaker for e in lab.stream(path, window, first)]
        enrolled_decisions += len(decisions)
        identified += decisions.count(name)
        reply = lab.verify(account, path)
        verified += reply is not None and reply["decision"] == name
    for path in fold.stranger_files:
        decisions = [decide(fold.enrolled, e, threshold).speaker for e in lab.stream(path, window, first)]
        stranger_decisions += len(decisions)
        unknown += decisions.count(UNKNOWN)
        reply = lab.verify(account, path)
        rejected += reply is not None and reply["decision"] == UNKNOWN
        if reply is not None and reply["decision"] != UNKNOWN:
            print(f"  /verify took stranger file {path.parent.name}/{path.name} for {reply['decision']} "
                  f"(score {reply['score']:.3f}, margin {reply['score'] - sorted(reply['scores'].values())[-2]:.3f})",
                  file=sys.stderr)
    return Outcome(fold.stranger, enrolled_decisions, identified, stranger_decisions, unknown,
                   len(fold.stranger_files), rejected, len(fold.held_out), verified, threshold)


def outcome_table(outcomes: list[Outcome]) -> str:
    head = (f"{'stranger':>10} {'thr':>6} {'enrolled: identified':>24} {'stranger: unknown':>22} "
            f"{'/verify rejects stranger':>25} {'/verify names held-out':>23}")
    lines = [head, "-" * len(head)]
    for o in [*outcomes, sum(outcomes[1:], outcomes[0])]:
        thr = f"{o.threshold:6.3f}" if o.threshold is not None else f"{'':6}"
        lines.append(f"{o.stranger:>10} {thr} {f'{o.identified}/{o.enrolled_decisions}':>14} "
                     f"{o.identified_share:8.1%} {f'{o.unknown}/{o.stranger_decisions}':>13} {o.unknown_share:8.1%} "
                     f"{f'{o.rejected_files}/{o.stranger_files}':>25} {f'{o.verified_files}/{o.held_out_files}':>23}")
    return "\n".join(lines)


# --- 3. rejection methods -------------------------------------------------------

# A method scores embeddings against a fold's voiceprints: (best speaker's
# index, its score, whether the other condition holds) per row; a decision
# names the best speaker when score >= threshold and the condition holds.
Scored = tuple[np.ndarray, np.ndarray, np.ndarray]
Method = Callable[[Enrolled, np.ndarray], Scored]


def cosine(enrolled: Enrolled, embeddings: np.ndarray) -> Scored:
    scores = embeddings @ enrolled.matrix.T
    return scores.argmax(1), scores.max(1), np.ones(len(scores), bool)


def with_margin(margin: float) -> Method:
    """Best cosine, and at least `margin` above the second best: a window
    between two enrolled voices is nobody's."""
    def method(enrolled: Enrolled, embeddings: np.ndarray) -> Scored:
        scores = embeddings @ enrolled.matrix.T
        top = np.sort(scores, axis=1)
        gap = top[:, -1] - top[:, -2] if scores.shape[1] > 1 else np.full(len(scores), np.inf)
        return scores.argmax(1), top[:, -1], gap >= margin
    return method


def snorm(cohort: np.ndarray, top_k: int) -> Method:
    """Adaptive symmetric normalisation (Matejka et al. 2017): a score minus
    the mean of the top_k cohort scores of each side, over their spread,
    averaged over both sides. The cohort of a voiceprint and of an embedding
    is the given cohort plus the account's other speakers."""
    def method(enrolled: Enrolled, embeddings: np.ndarray) -> Scored:
        v = enrolled.matrix
        raw = embeddings @ v.T
        normed = np.empty_like(raw)
        for i in range(len(v)):
            others = np.delete(np.arange(len(v)), i)
            side_v = np.sort(np.concatenate((cohort @ v[i], v[others] @ v[i])))[::-1][:top_k]
            side_e = np.sort(np.concatenate((embeddings @ cohort.T, raw[:, others]), axis=1), axis=1)[:, ::-1]
            side_e = side_e[:, :top_k]
            normed[:, i] = 0.5 * ((raw[:, i] - side_v.mean()) / (side_v.std() + 1e-3)
                                  + (raw[:, i] - side_e.mean(1)) / (side_e.std(1) + 1e-3))
        return normed.argmax(1), normed.max(1), np.ones(len(raw), bool)
    return method


@dataclass(frozen=True)
class Scores:
    """One fold's method outputs: per held-out file (true index) and per stranger file."""
    held_out: list[tuple[int, Scored, Scored]]  # (speaker index, streaming, whole file)
    stranger: list[tuple[Scored, Scored]]


def fold_scores(lab: Lab, fold: Fold, method: Method, window: float, first: float) -> Scores:
    names = list(fold.enrolled.names)
    return Scores([(names.index(n), method(fold.enrolled, lab.stream(p, window, first)),
                    method(fold.enrolled, lab.whole(p)[None])) for n, p in fold.held_out],
                  [(method(fold.enrolled, lab.stream(p, window, first)), method(fold.enrolled, lab.whole(p)[None]))
                   for p in fold.stranger_files])


def outcome_at(stranger: str, s: Scores, threshold: float) -> Outcome:
    def named(scored: Scored) -> np.ndarray:
        best, value, ok = scored
        return np.where((value >= threshold) & ok, best, -1)
    identified = sum(int((named(st) == i).sum()) for i, st, _ in s.held_out)
    enrolled = sum(len(st[0]) for _, st, _ in s.held_out)
    unknown = sum(int((named(st) == -1).sum()) for st, _ in s.stranger)
    decisions = sum(len(st[0]) for st, _ in s.stranger)
    rejected = sum(int(named(w)[0] == -1) for _, w in s.stranger)
    verified = sum(int(named(w)[0] == i) for i, _, w in s.held_out)
    return Outcome(stranger, enrolled, identified, decisions, unknown, len(s.stranger), rejected, len(s.held_out),
                   verified, threshold)


def chosen_elsewhere(scores: dict[str, Scores], grid: np.ndarray) -> list[Outcome]:
    """Each fold at the threshold that best balances identification and
    rejection on the other folds (ties: the lower threshold)."""
    def balance(threshold: float, left_out: str) -> float:
        others = [outcome_at(s, sc, threshold) for s, sc in scores.items() if s != left_out]
        return sum(others[1:], others[0]).balance()
    outcomes = []
    for stranger in scores:
        best = max(grid, key=lambda t: (balance(float(t), stranger), -t))
        outcomes.append(outcome_at(stranger, scores[stranger], float(best)))
    return outcomes


@dataclass(frozen=True)
class Setting:
    label: str
    method: Method
    grid: np.ndarray
    window: float
    first: float  # seconds of a turn's speech before its first decision


def settings(window: float, cohort: np.ndarray | None) -> list[Setting]:
    first = min(MIN_WINDOW_SECONDS, window)
    rows = [Setting(f"cosine, window {window:g} s, first at 1.5 s", cosine, COSINE_GRID, window, 1.5),
            Setting(f"cosine, window {window:g} s, first at {first:g} s", cosine, COSINE_GRID, window, first)]
    rows += [Setting(f"  + margin {m:g} over the second best", with_margin(m), COSINE_GRID, window, first)
             for m in (0.02, 0.05, 0.08)]
    if cohort is not None:
        rows += [Setting(f"  S-norm, top {k} of {len(cohort)} cohort + others", snorm(cohort, k), SNORM_GRID, window,
                         first) for k in (5, 10)]
    rows += [Setting(f"cosine, window {w:g} s, first at {f:g} s", cosine, COSINE_GRID, w, f)
             for w, f in ((3.0, 3.0), (4.0, 2.0), (4.0, 3.0), (4.0, 4.0))]
    return rows


def methods_table(lab: Lab, folds: list[Fold], window: float, cohort: np.ndarray | None) -> str:
    head = (f"{'method':40} {'thresholds':>12} {'identified':>18} {'unknown':>15} {'/verify rejects':>16} "
            f"{'/verify names':>14}")
    lines = [head, "-" * len(head)]
    for s in settings(window, cohort):
        scores = {f.stranger: fold_scores(lab, f, s.method, s.window, s.first) for f in folds}
        outcomes = chosen_elsewhere(scores, s.grid)
        total = sum(outcomes[1:], outcomes[0])
        chosen = [o.threshold for o in outcomes if o.threshold is not None]
        lines.append(f"{s.label:40} {f'{min(chosen):g}-{max(chosen):g}':>12} "
                     f"{f'{total.identified}/{total.enrolled_decisions}':>10} {total.identified_share:7.1%} "
                     f"{f'{total.unknown}/{total.stranger_decisions}':>8} {total.unknown_share:6.1%} "
                     f"{f'{total.rejected_files}/{total.stranger_files}':>16} "
                     f"{f'{total.verified_files}/{total.held_out_files}':>14}")
    return "\n".join(lines)


def cohort_embeddings(lab: Lab, folder: Path) -> np.ndarray | None:
    files = sorted(folder.glob("*.wav"))
    if not files:
        print(f"no cohort WAVs in {folder} (scripts/make_samples.sh makes them): S-norm left out", file=sys.stderr)
        return None
    return np.stack([lab.whole(path) for path in files])


def leave_one_out(lab: Lab, speakers: dict[str, list[Path]], enroll_files: int, window: float,
                  methods: bool, cohort_dir: Path, first_decision: float = MIN_WINDOW_SECONDS) -> list[Outcome]:
    folds = make_folds(lab, speakers, enroll_files)
    if not folds:
        return []
    first = min(first_decision, window)
    outcomes = [streamed_fold(lab, f, window, first, lab.threshold) for f in folds]
    print(f"\nLeave one speaker out ({lab.encoder.name}): {len(speakers) - 1} speakers enrolled, the other one a "
          f"stranger; threshold {lab.threshold:g}, window {window:g} s, first decision at {first:g} s of speech")
    print(outcome_table(outcomes))
    if methods:
        print(f"\nRejection methods, leave one speaker out ({lab.encoder.name}); each fold at the threshold chosen "
              f"on the other folds (range shown):")
        print(methods_table(lab, folds, window, cohort_embeddings(lab, cohort_dir)))
    return outcomes


def write_dotenv(path: Path, values: dict[str, str]) -> None:
    """Set keys in a dotenv file, keeping every other line as it was."""
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line.split("=", 1)[0].strip() not in values]
    path.write_text("\n".join(kept + [f"{k}={v}" for k, v in values.items()]) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", type=Path, default=SPEAKERS,
                   help=f"folder of speaker_x/*.wav (default: {SPEAKERS})")
    p.add_argument("--encoders", default="ge2e", help="comma-separated: ge2e, ecapa (default: ge2e)")
    p.add_argument("--ecapa-source", default="speechbrain/spkrec-ecapa-voxceleb", help="hub id or local directory")
    p.add_argument("--model-dir", default=str(MODELS),
                   help=f"the worker's --model-dir (ONNX graphs) (default: {MODELS})")
    p.add_argument("--enroll-files", type=int, default=2, help="files per speaker to enroll from (default 2)")
    p.add_argument("--windows", default="1.5,2,3",
                   help="streaming window lengths in seconds for the EER table (default 1.5,2,3)")
    p.add_argument("--hop", type=float, default=0.5, help="new speech between streaming decisions (default 0.5)")
    p.add_argument("--threshold", type=float,
                   help="decision threshold of the leave-one-out run (default: the worker's for the encoder)")
    p.add_argument("--min-enroll-seconds", type=float, default=3.0, help="skip enrollment files with less speech")
    p.add_argument("--vad-threshold", type=float, default=VadParams().threshold,
                   help=f"the workers' --vad-threshold (default {VadParams().threshold:g}, theirs)")
    p.add_argument("--vad-min-silence-ms", type=int, default=VadParams().min_silence_ms,
                   help=f"the workers' --vad-min-silence-ms (default {VadParams().min_silence_ms}, theirs)")
    p.add_argument("--first-decision-seconds", type=float, default=MIN_WINDOW_SECONDS,
                   help=f"the workers' --first-decision-seconds for the leave-one-out run (default "
                        f"{MIN_WINDOW_SECONDS:g}, theirs)")
    p.add_argument("--methods", action="store_true",
                   help="also measure the rejection methods (margin, S-norm, first decision, window), leave one out")
    p.add_argument("--cohort", type=Path, default=COHORT, help=f"cohort WAVs for S-norm (default: {COHORT})")
    p.add_argument("--write-config", type=Path, metavar="FILE",
                   help="merge SPEAKER_ENCODER and SPEAKER_THRESHOLD into this dotenv file (one encoder only)")
    p.add_argument("--config-window", type=float, default=2.0,
                   help="the worker's --window-seconds: its live row, the leave-one-out window, and the threshold "
                        "--write-config writes (default 2.0, the worker's default)")
    a = p.parse_args(argv)

    encoders = [e.strip() for e in a.encoders.split(",") if e.strip()]
    windows = [float(w) for w in a.windows.split(",") if w.strip()]
    if a.write_config and len(encoders) != 1:
        p.error("--write-config needs exactly one encoder in --encoders")
    speakers = speaker_files(a.folder)
    short = [name for name, files in speakers.items() if len(files) <= a.enroll_files]
    if short:
        p.error(f"speakers with no file left to test after {a.enroll_files} enrollment files: {', '.join(short)}")
    if len(speakers) < 3:
        p.error(f"{a.folder} needs at least three speaker folders with WAVs (two enrolled and a stranger)")
    print(f"{len(speakers)} speakers in {a.folder}: "
          + ", ".join(f"{n} ({len(f)} files)" for n, f in speakers.items())
          + f"; enroll {a.enroll_files} files each, hop {a.hop:g} s", flush=True)

    vad = VadEngine(SileroOnnx(), replace(VadParams(), threshold=a.vad_threshold, min_silence_ms=a.vad_min_silence_ms))
    results: list[Result] = []
    for kind in encoders:
        encoder = load_onnx_encoder(kind, a.ecapa_source, a.model_dir)
        if isinstance(encoder, Unavailable):
            print(f"{kind}: unavailable: {encoder.reason}", file=sys.stderr)
            continue
        threshold = a.threshold if a.threshold is not None else DEFAULT_THRESHOLDS[kind]
        with lab(encoder, vad, threshold, a.min_enroll_seconds, a.hop) as run:
            found = closed_set(run, speakers, a.enroll_files, windows, a.config_window)
            print(table(found), flush=True)
            results += found
            leave_one_out(run, speakers, a.enroll_files, a.config_window, a.methods, a.cohort,
                          a.first_decision_seconds)
    if not results:
        return 1
    print("\nEER, thr@EER: equal error rate of target vs non-target scores and the threshold where it falls;\n"
          "ident: best-scoring speaker is right (closed set); decide: right and >= thr@EER.\n"
          "identified: decisions on an enrolled speaker's held-out files that name them; unknown: decisions on\n"
          "the stranger that are 'unknown' (a decision holds for the voiced frames of the next hop).")
    if a.write_config:
        chosen = next(r for r in results if r.window == live_label(a.config_window))
        write_dotenv(a.write_config, {"SPEAKER_ENCODER": chosen.encoder,
                                      "SPEAKER_THRESHOLD": f"{chosen.threshold:.4f}"})
        print(f"wrote SPEAKER_ENCODER={chosen.encoder} SPEAKER_THRESHOLD={chosen.threshold:.4f} to {a.write_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
