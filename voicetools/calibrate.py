"""Calibrate speaker identification on a folder of speaker_x/*.wav recordings.

Everything runs through the worker's own code: the served ONNX graph
(worker/speakers/loader.py, exported in a subprocess when missing), the
worker's VAD, SpeakerService.enroll and .verify (what POST
/accounts/<code>/speakers/<name> and /verify do), and the speaker tracker's
windows and decoder (worker.speakers.tracker.record_windows and
track_recording: what a worker labels while a recording streams in 100 ms
frames).

1. Closed set (EER table). Every speaker is enrolled from its first
   --enroll-files WAVs (sorted by name); the rest are scored as the tracker's
   windows ("1 s": full-length windows only; "all windows": every window,
   from 0.3 s of a run's speech on) and as whole files (what /verify embeds).
   Printed per encoder: trials, EER, the threshold at the EER, identification
   accuracy (the best score is the right speaker) and the accuracy of the
   decision at that threshold.

2. Leave one speaker out (unknown speakers): for each speaker in turn, the
   other speakers are enrolled (first --enroll-files each) and the stranger is
   streamed with the others' held-out files through the tracker. Per fold:
   how many labelled voiced frames of enrolled speakers name the right one
   and how many of the stranger's are "unknown", for the immediate labels
   (what a frame's reply and log line say) and the final ones (segments,
   --lag-ms after), and how many of the stranger's files /verify rejects (and
   of the held-out files it names right). At the worker's threshold, and at
   a threshold chosen for each fold on the other folds (the one that best
   balances identification and rejection there), so that figure is not tuned
   to the data it reports.

--write-config FILE merges SPEAKER_ENCODER and SPEAKER_THRESHOLD (the
threshold at the EER of the 1 s windows) into a dotenv file. Workers read
both from the environment; honcho loads .env next to the Procfile by itself:

    .venv/bin/voicestream-calibrate --encoders ge2e --write-config .env

Example:
    .venv/bin/voicestream-calibrate ../shared/data/speakers --encoders ge2e
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from voicetools.paths import MODELS, SPEAKERS
from worker.audio import Audio, decode_wav, to_16k
from worker.speakers.decoder import Label
from worker.speakers.encoders import DEFAULT_THRESHOLDS, SCORE_MODELS, Encoder, Unavailable
from worker.speakers.engine import SpeakerEngine
from worker.speakers.hmm import ScoreModel
from worker.speakers.loader import load_onnx_encoder
from worker.speakers.scoring import UNKNOWN, Enrolled, Roster
from worker.speakers.service import SpeakerError, SpeakerService
from worker.speakers.tracker import RecordedFrame, record_windows, scheduled, track_recording
from worker.storage.sqlite import SqliteVoiceprintStore
from worker.storage.voiceprints import EncoderId
from worker.vad import SileroOnnx, VadEngine, VadParams, voiced_samples

PROG = "voicestream-calibrate"
WHOLE = "whole"
# Threshold candidates for choosing one on the other folds.
GRID = np.round(np.arange(0.55, 0.80, 0.01), 3)
FULL_WINDOW = 1.0 - 1e-9  # a full-length tracker window


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
    SQLite file): enrollment, /verify and the tracker's windows as a worker
    makes them. A recording's windows are embedded once, whatever it is then
    tracked against."""

    def __init__(self, encoder: Encoder, vad: VadEngine, store: SqliteVoiceprintStore, threshold: float,
                 min_enroll_seconds: float) -> None:
        self.encoder, self.vad, self.store = encoder, vad, store
        self.encoder_id = EncoderId(encoder.name, encoder.model, encoder.dim)
        self.service = SpeakerService(SpeakerEngine(encoder.name, lambda: encoder), store, vad, None, threshold,
                                      min_enroll_seconds)
        assert self.service.engine is not None and self.service.engine.wait_loaded(60)
        self.roster = Roster(store)
        self._frames: dict[Path, list[RecordedFrame]] = {}
        self._whole: dict[Path, np.ndarray] = {}

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

    def frames(self, path: Path) -> list[RecordedFrame]:
        """The file streamed through the worker's VAD and windows, embedded."""
        if path not in self._frames:
            self._frames[path] = record_windows(self.encoder, self.vad, read_wav(path))
        return self._frames[path]

    def windows(self, path: Path, full_only: bool) -> np.ndarray:
        """The embeddings of the windows a stream of the file gets while its
        decision is unsure (one every 0.2 s of a run), full: only 1 s ones."""
        rows = [e for f, e in scheduled(self.frames(path))
                if e is not None and (not full_only or f.window_seconds >= FULL_WINDOW)]
        return np.stack(rows) if rows else np.empty((0, self.encoder.dim), np.float32)

    def whole(self, path: Path) -> np.ndarray:
        """The file's voiced audio embedded in one piece, as /verify does."""
        if path not in self._whole:
            audio = read_wav(path)
            voiced = to_16k(Audio(voiced_samples(self.vad, audio), audio.sample_rate))
            self._whole[path] = self.encoder.embed_batch([voiced])[0]
        return self._whole[path]


@contextmanager
def lab(encoder: Encoder, vad: VadEngine, threshold: float, min_enroll_seconds: float) -> Iterator[Lab]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Lab(encoder, vad, SqliteVoiceprintStore(Path(tmp) / "calibration.db"), threshold, min_enroll_seconds)


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


ONE_SECOND, ALL_WINDOWS = "1 s", "all windows"


def closed_set(lab: Lab, speakers: dict[str, list[Path]], enroll_files: int) -> list[Result]:
    enrolled = lab.enroll("closed-set", {name: files[:enroll_files] for name, files in speakers.items()})
    if enrolled is None:
        print(f"{lab.encoder.name}: no speaker had enough speech in a file to enroll", file=sys.stderr)
        return []
    names, matrix = list(enrolled.names), enrolled.matrix
    tests = [(name, path) for name, files in speakers.items() if name in names for path in files[enroll_files:]]
    results = []
    for label, full_only in ((ONE_SECOND, True), (ALL_WINDOWS, False)):
        rows = [(name, lab.windows(path, full_only)) for name, path in tests]
        labels = [name for name, e in rows for _ in range(len(e))]
        if labels:
            results.append(score(lab.encoder.name, names, matrix, labels, np.concatenate([e for _, e in rows]),
                                 label))
    whole = [(name, lab.whole(path)) for name, path in tests]
    results.append(score(lab.encoder.name, names, matrix, [n for n, _ in whole], np.stack([e for _, e in whole]),
                         WHOLE))
    return results


def table(results: list[Result]) -> str:
    head = (f"{'encoder':8} {'window':>11} {'trials tgt/non':>15} {'EER':>7} {'thr@EER':>8} {'ident':>7} "
            f"{'decide':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.encoder:8} {r.window:>11} {f'{r.targets}/{r.nontargets}':>15} {r.eer:7.1%} "
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
class Shares:
    """Labelled voiced frames of one kind of label (immediate or final)."""
    enrolled: int = 0
    identified: int = 0
    stranger: int = 0
    unknown: int = 0

    def __add__(self, other: Shares) -> Shares:
        return Shares(self.enrolled + other.enrolled, self.identified + other.identified,
                      self.stranger + other.stranger, self.unknown + other.unknown)

    @property
    def identified_share(self) -> float:
        return self.identified / max(self.enrolled, 1)

    @property
    def unknown_share(self) -> float:
        return self.unknown / max(self.stranger, 1)

    def balance(self) -> float:
        return min(self.identified_share, self.unknown_share)


def shares(labels: Sequence[Label | None], truth: str) -> Shares:
    said = [label.speaker for label in labels if label is not None]
    if truth == UNKNOWN:
        return Shares(stranger=len(said), unknown=said.count(UNKNOWN))
    return Shares(enrolled=len(said), identified=said.count(truth))


@dataclass(frozen=True)
class Outcome:
    """One fold's (or all folds') figures."""
    stranger: str
    threshold: float
    immediate: Shares
    final: Shares
    stranger_files: int = 0
    rejected_files: int = 0
    held_out_files: int = 0
    verified_files: int = 0  # held-out files /verify names right

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome("all", self.threshold if self.threshold == other.threshold else float("nan"),
                       self.immediate + other.immediate, self.final + other.final,
                       self.stranger_files + other.stranger_files, self.rejected_files + other.rejected_files,
                       self.held_out_files + other.held_out_files, self.verified_files + other.verified_files)


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


def tracked_fold(lab: Lab, fold: Fold, model: ScoreModel, lag: float) -> Outcome:
    """The fold's files through the tracker at model's threshold."""
    immediate, final = Shares(), Shares()
    for truth, path in [*fold.held_out, *((UNKNOWN, p) for p in fold.stranger_files)]:
        now, later = track_recording(lab.frames(path), fold.enrolled, model, lag)
        immediate, final = immediate + shares(now, truth), final + shares(later, truth)
    return Outcome(fold.stranger, model.threshold, immediate, final)


def verified_fold(lab: Lab, fold: Fold) -> Outcome:
    """/verify's answers for the fold's files (no tracking)."""
    account = f"loso-{fold.stranger}"
    rejected = verified = 0
    for name, path in fold.held_out:
        reply = lab.verify(account, path)
        verified += reply is not None and reply["decision"] == name
    for path in fold.stranger_files:
        reply = lab.verify(account, path)
        rejected += reply is not None and reply["decision"] == UNKNOWN
        if reply is not None and reply["decision"] != UNKNOWN:
            print(f"  /verify took stranger file {path.parent.name}/{path.name} for {reply['decision']} "
                  f"(score {reply['score']:.3f}, margin {reply['score'] - sorted(reply['scores'].values())[-2]:.3f})",
                  file=sys.stderr)
    return Outcome(fold.stranger, float("nan"), Shares(), Shares(), len(fold.stranger_files), rejected,
                   len(fold.held_out), verified)


Grid = dict[tuple[str, float], Outcome]  # (stranger, threshold) -> the fold tracked at that threshold


def tracked_grid(lab: Lab, folds: list[Fold], model: ScoreModel, lag: float) -> Grid:
    """Every fold tracked at every threshold of GRID (immediate and final labels at once)."""
    return {(f.stranger, float(t)): tracked_fold(lab, f, model.with_threshold(float(t)), lag) for f in folds
            for t in GRID}


def chosen_elsewhere(at: Grid, folds: list[Fold], final: bool) -> list[Outcome]:
    """Each fold at the threshold that best balances identification and
    rejection (of the final or immediate labels) on the other folds (ties:
    the lower threshold)."""
    def balance(threshold: float, left_out: str) -> float:
        kept = [at[(f.stranger, threshold)] for f in folds if f.stranger != left_out]
        total = sum(kept[1:], kept[0])
        return (total.final if final else total.immediate).balance()
    outcomes = []
    for fold in folds:
        best = max(GRID, key=lambda t: (balance(float(t), fold.stranger), -t))
        outcomes.append(at[(fold.stranger, float(best))])
    return outcomes


def outcome_table(outcomes: list[Outcome], title: str) -> str:
    head = (f"{'stranger':>10} {'thr':>6} {'immediate: identified':>23} {'unknown':>15} "
            f"{'final: identified':>19} {'unknown':>15}")
    lines = [title, head, "-" * len(head)]
    for o in [*outcomes, sum(outcomes[1:], outcomes[0])]:
        thr = f"{o.threshold:6.3f}" if o.threshold == o.threshold else f"{'':6}"
        cells = []
        for s in (o.immediate, o.final):
            cells.append(f"{f'{s.identified}/{s.enrolled}':>12} {s.identified_share:7.1%} "
                         f"{f'{s.unknown}/{s.stranger}':>9} {s.unknown_share:6.1%}")
        lines.append(f"{o.stranger:>10} {thr} {cells[0]:>39} {cells[1]:>35}")
    return "\n".join(lines)


def verify_table(outcomes: list[Outcome]) -> str:
    total = sum(outcomes[1:], outcomes[0])
    lines = [f"{'stranger':>10} {'/verify rejects stranger files':>31} {'/verify names held-out files':>29}"]
    for o in [*outcomes, total]:
        lines.append(f"{o.stranger:>10} {f'{o.rejected_files}/{o.stranger_files}':>31} "
                     f"{f'{o.verified_files}/{o.held_out_files}':>29}")
    return "\n".join(lines)


def leave_one_out(lab: Lab, speakers: dict[str, list[Path]], enroll_files: int, model: ScoreModel,
                  lag: float) -> list[Outcome]:
    folds = make_folds(lab, speakers, enroll_files)
    if not folds:
        return []
    outcomes = [tracked_fold(lab, f, model, lag) for f in folds]
    name = lab.encoder.name
    print(outcome_table(outcomes, f"\nLeave one speaker out ({name}): {len(speakers) - 1} speakers enrolled, the "
                                  f"other one a stranger; the tracker at threshold {model.threshold:g}, final labels "
                                  f"{lag * 1000:g} ms after their frame"))
    at = tracked_grid(lab, folds, model, lag)
    for final in (False, True):
        print(outcome_table(chosen_elsewhere(at, folds, final),
                            f"\nThe same, each fold at the threshold chosen on the other folds for the "
                            f"{'final' if final else 'immediate'} labels"))
    print("\n" + verify_table([verified_fold(lab, f) for f in folds]))
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
    p.add_argument("--threshold", type=float,
                   help="the tracker's threshold (a 1 s window's score) in the leave-one-out run (default: the "
                        "worker's for the encoder)")
    p.add_argument("--lag-ms", type=int, default=1000,
                   help="the workers' --speaker-lag-ms: when final labels come (default 1000, theirs)")
    p.add_argument("--min-enroll-seconds", type=float, default=3.0, help="skip enrollment files with less speech")
    p.add_argument("--vad-threshold", type=float, default=VadParams().threshold,
                   help=f"the workers' --vad-threshold (default {VadParams().threshold:g}, theirs)")
    p.add_argument("--vad-min-silence-ms", type=int, default=VadParams().min_silence_ms,
                   help=f"the workers' --vad-min-silence-ms (default {VadParams().min_silence_ms}, theirs)")
    p.add_argument("--write-config", type=Path, metavar="FILE",
                   help="merge SPEAKER_ENCODER and SPEAKER_THRESHOLD (at the 1 s windows' EER) into this dotenv "
                        "file (one encoder only)")
    a = p.parse_args(argv)

    encoders = [e.strip() for e in a.encoders.split(",") if e.strip()]
    if a.write_config and len(encoders) != 1:
        p.error("--write-config needs exactly one encoder in --encoders")
    if not 0 <= a.lag_ms <= 1000:
        p.error("--lag-ms must be 0 to 1000, as the workers' --speaker-lag-ms")
    speakers = speaker_files(a.folder)
    short = [name for name, files in speakers.items() if len(files) <= a.enroll_files]
    if short:
        p.error(f"speakers with no file left to test after {a.enroll_files} enrollment files: {', '.join(short)}")
    if len(speakers) < 3:
        p.error(f"{a.folder} needs at least three speaker folders with WAVs (two enrolled and a stranger)")
    print(f"{len(speakers)} speakers in {a.folder}: "
          + ", ".join(f"{n} ({len(f)} files)" for n, f in speakers.items())
          + f"; enroll {a.enroll_files} files each", flush=True)

    vad = VadEngine(SileroOnnx(), replace(VadParams(), threshold=a.vad_threshold, min_silence_ms=a.vad_min_silence_ms))
    results: list[Result] = []
    for kind in encoders:
        encoder = load_onnx_encoder(kind, a.ecapa_source, a.model_dir)
        if isinstance(encoder, Unavailable):
            print(f"{kind}: unavailable: {encoder.reason}", file=sys.stderr)
            continue
        model = SCORE_MODELS[kind] if a.threshold is None else SCORE_MODELS[kind].with_threshold(a.threshold)
        with lab(encoder, vad, DEFAULT_THRESHOLDS[kind], a.min_enroll_seconds) as run:
            found = closed_set(run, speakers, a.enroll_files)
            print(table(found), flush=True)
            results += found
            leave_one_out(run, speakers, a.enroll_files, model, a.lag_ms / 1000)
    if not results:
        return 1
    print("\nEER, thr@EER: equal error rate of target vs non-target scores and the threshold where it falls;\n"
          "ident: best-scoring speaker is right (closed set); decide: right and >= thr@EER.\n"
          "identified: labelled voiced frames of an enrolled speaker's held-out files that name them; unknown:\n"
          "labelled voiced frames of the stranger's files that say 'unknown'.")
    if a.write_config:
        chosen = next(r for r in results if r.window == ONE_SECOND)
        write_dotenv(a.write_config, {"SPEAKER_ENCODER": chosen.encoder,
                                      "SPEAKER_THRESHOLD": f"{chosen.threshold:.4f}"})
        print(f"wrote SPEAKER_ENCODER={chosen.encoder} SPEAKER_THRESHOLD={chosen.threshold:.4f} to {a.write_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
