"""A conversation benchmark: who spoke when, scored with pyannote.metrics.

    .venv/bin/voicestream-conversation                     # GE2E, ../shared/data/speakers
    .venv/bin/voicestream-conversation --encoders ge2e,ecapa --ecapa-source /models/spkrec-ecapa-voxceleb
    .venv/bin/voicestream-conversation --strangers speaker_1 --turns-each 1 --json-out conv.json

Leave one speaker out: each speaker of the folder in turn is the stranger.
The others are enrolled from their first --enroll-files files (sorted by
name), never streamed; the conversation alternates pieces of their other
files and of the stranger's, with a short pause of low noise between turns
(seeded). It is streamed through a real balancer and worker(s) started by
voicetools.cluster, one 100 ms frame at a time, each sent once the previous
one is answered (as fast as replies come: speaker state follows the audio,
not the wall clock). The hypothesis is the account's frame log read by
voicetools.timeline (speaker per frame, in audio time); the reference names
the enrolled speakers and calls the stranger `unknown`, pauses unlabelled.
Both are written as RTTM to --out-dir and scored with pyannote.metrics'
IdentificationErrorRate (collar --collar seconds), per fold and overall.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path

from voicetools.paths import REPO, RESULTS, SPEAKERS
from worker.vad import VadEngine

from . import ConversationError, EncoderUnavailable
from .build import (
    NOISE_DBFS,
    PAUSE_SECONDS,
    TURN_SECONDS,
    BuildOptions,
    build,
    rttm,
    speaker_files,
    vad_engine,
)
from .scoring import (
    BREAKDOWN,
    COLLAR,
    HEAD_SECONDS,
    Phases,
    Score,
    breakdown,
    phases,
    score,
    stranger_named,
    total,
    who_for_whom,
)
from .system import enroll, hypothesis, start, stream

PROG = "voicestream-conversation"
ENCODERS = ("ge2e", "ecapa")



@dataclass
class Fold:
    encoder: str
    stranger: str
    account: str
    seconds: float
    turns: int
    restarts: int
    score: Score
    reference_rttm: str
    hypothesis_rttm: str
    labels: list[str] = field(default_factory=list)   # the hypothesis's
    matrix: dict[str, dict[str, float]] = field(default_factory=dict)  # who_for_whom
    phases: Phases = field(default_factory=Phases)

    def as_dict(self) -> dict:
        named, spoke = stranger_named(self.matrix)
        return {"encoder": self.encoder, "stranger": self.stranger, "account": self.account,
                "seconds": round(self.seconds, 3), "turns": self.turns, "restarts": self.restarts,
                "labels": self.labels, "reference_rttm": self.reference_rttm,
                "hypothesis_rttm": self.hypothesis_rttm, **self.score.as_dict(),
                "stranger_seconds": round(spoke, 3), "stranger_named_seconds": round(named, 3),
                "breakdown": breakdown(self.matrix), "turn_phases": self.phases.as_dict(),
                "who_for_whom": self.matrix}


@dataclass
class EncoderRun:
    encoder: str
    status: dict = field(default_factory=dict)  # the workers' /health speakers status: model, graph
    unavailable: str = ""                       # why its workers could not load it
    folds: list[Fold] = field(default_factory=list)

    def as_dict(self) -> dict:
        if self.unavailable:
            return {"unavailable": self.unavailable}
        named = [stranger_named(f.matrix) for f in self.folds]
        sums = [breakdown(f.matrix) for f in self.folds]
        return {"status": self.status, **total([f.score for f in self.folds]).as_dict(),
                "stranger_seconds": round(sum(s for _, s in named), 3),
                "stranger_named_seconds": round(sum(n for n, _ in named), 3),
                "breakdown": {k: round(sum(b[k] for b in sums), 3) for k in BREAKDOWN},
                "turn_phases": self.phases().as_dict()}

    def phases(self) -> Phases:
        return Phases(*(sum(column) for column in zip(*(astuple(f.phases) for f in self.folds), strict=True)))


def run_encoder(encoder: str, a: argparse.Namespace, speakers: Mapping[str, Sequence[Path]], strangers: list[str],
                vad: VadEngine, root: Path) -> EncoderRun:
    options = build_options(a)
    out_dir = a.out_dir / encoder
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        system, status = start(encoder, root / encoder, a.ecapa_source, a.workers)
    except EncoderUnavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EncoderRun(encoder, unavailable=str(exc))
    run = EncoderRun(encoder, status)
    try:
        for stranger in strangers:
            fold = list(speakers).index(stranger)
            account = f"conv-{encoder}-{fold}"  # the system and its store are fresh: no one enrolled yet
            conversation = build(stranger, speakers, options, vad, fold, uri=f"{encoder}-{stranger}")
            enroll(system, account, conversation.enrolled)
            replies = stream(system.ws_url, account, conversation.samples)
            reference = conversation.reference(options.reference)
            hyp = hypothesis(system, account, replies)
            ref_path, hyp_path = out_dir / f"{stranger}.ref.rttm", out_dir / f"{stranger}.hyp.rttm"
            ref_path.write_text(rttm(conversation.uri, reference))
            hyp_path.write_text(rttm(conversation.uri, hyp))
            result = score(conversation.uri, reference, hyp, conversation.seconds, a.collar)
            run.folds.append(Fold(encoder, stranger, account, conversation.seconds, len(conversation.turns),
                                  conversation.restarts, result, str(ref_path), str(hyp_path),
                                  sorted({s.speaker for s in hyp}), who_for_whom(reference, hyp),
                                  phases(conversation.turns, hyp)))
            print(row(encoder, stranger, result, stranger_named(run.folds[-1].matrix)), file=sys.stderr, flush=True)
    finally:
        system.stop()
    return run


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


def table(runs: Sequence[EncoderRun]) -> str:
    """A row per fold, then each encoder's total over its folds (components summed)."""
    lines = [HEADER]
    for run in runs:
        if run.unavailable:
            lines.append(f"{run.encoder:<8} unavailable: the workers could not load it (above)")
            continue
        named = [stranger_named(f.matrix) for f in run.folds]
        lines += [row(run.encoder, f.stranger, f.score, n) for f, n in zip(run.folds, named, strict=True)]
        lines.append(row(run.encoder, "all", total([f.score for f in run.folds]),
                         (sum(n for n, _ in named), sum(s for _, s in named))))
    for run in runs:
        if run.folds:
            p = run.phases()
            head, rest = 100 * p.head_wrong / max(p.head, 1e-9), 100 * p.rest_wrong / max(p.rest, 1e-9)
            lines.append(f"{run.encoder}: wrong label on {head:.0f}% of the speech in the first {HEAD_SECONDS:g} s "
                         f"of a turn, {rest:.0f}% after")
    return "\n".join(lines)


# What the measured processes run: a change here that is not committed yet
# makes the figures those of the commit plus that change.
SERVED = ("balancer", "worker", "voicestream")


def commit() -> str:
    """The checkout's commit, "+modified" when the served code differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        return head + ("+modified" if git("status", "--porcelain", "--untracked-files=no", "--", *SERVED) else "")
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
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", type=Path, default=SPEAKERS,
                   help="a folder of <speaker>/*.wav, 16 kHz mono (default: %(default)s)")
    p.add_argument("--encoders", default="ge2e",
                   help=f"comma-separated, of: {', '.join(ENCODERS)} (default: %(default)s)")
    p.add_argument("--ecapa-source", help="ECAPA's hub id or local directory (the workers' --ecapa-source)")
    p.add_argument("--strangers", help="comma-separated speaker names to run as the stranger (default: each speaker)")
    p.add_argument("--enroll-files", type=int, default=2,
                   help="first files (by name) of a speaker to enroll from (default: %(default)s)")
    p.add_argument("--turns-each", type=int, default=3,
                   help="turns per participant in a conversation (default: %(default)s)")
    p.add_argument("--turn-seconds", type=pair, default=TURN_SECONDS, metavar="MIN,MAX",
                   help="length of a turn, drawn uniformly (default: 3,6)")
    p.add_argument("--pause-seconds", type=pair, default=PAUSE_SECONDS, metavar="MIN,MAX",
                   help=f"noise ({NOISE_DBFS:g} dBFS) between turns, drawn uniformly (default: 0.5,1.5)")
    p.add_argument("--reference", choices=("speech", "turns"), default="speech",
                   help="reference segments: where silero hears speech in each turn, or whole turns "
                        "(default: %(default)s)")
    p.add_argument("--collar", type=float, default=COLLAR,
                   help="seconds either side of each reference boundary not scored (md-eval's -c; pyannote's "
                        "collar is twice this) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="draws turns, lengths and pauses (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="workers of the system measured (default: %(default)s)")
    p.add_argument("--out-dir", type=Path, default=RESULTS / "conversation",
                   help="RTTM files: <out-dir>/<encoder>/<stranger>.{ref,hyp}.rttm (default: %(default)s)")
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
        print(HEADER, file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="conversation-") as tmp:
            runs = [run_encoder(encoder, a, speakers, strangers, vad, Path(tmp)) for encoder in a.encoders]
    except ConversationError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    print(table(runs))
    print(f"collar ±{a.collar:g} s, reference: {a.reference}, commit {commit()}")
    if a.json_out is not None:
        a.json_out.parent.mkdir(parents=True, exist_ok=True)
        a.json_out.write_text(json.dumps({
            "commit": commit(), "folder": str(a.folder), "collar": a.collar, "reference": a.reference,
            "options": asdict(build_options(a)), "ecapa_source": a.ecapa_source, "workers": a.workers,
            "encoders": {run.encoder: run.as_dict() for run in runs},
            "folds": [f.as_dict() for run in runs for f in run.folds]}, indent=2) + "\n")
    return 1 if any(run.unavailable for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
