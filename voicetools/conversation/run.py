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

from voicetools import timeline
from voicetools.paths import REPO, RESULTS, SHARED_DATA, SPEAKERS
from voicetools.percentile import percentile
from worker.vad import VadEngine

from . import ConversationError, EncoderUnavailable
from .build import (
    NOISE_DBFS,
    PAUSE_SECONDS,
    TURN_SECONDS,
    BuildOptions,
    Conversation,
    build,
    recorded,
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
    first_label,
    phases,
    score,
    stranger_named,
    total,
    turn_latencies,
    who_for_whom,
)
from .system import System, enroll, final_hypothesis, hypothesis, start, stream

PROG = "voicestream-conversation"
RECORDED = [SHARED_DATA / "conversation" / "sample.wav", SHARED_DATA / "conversation" / "sample.rttm"]
ENCODERS = ("ge2e", "ecapa")



LABELS = ("immediate", "final")  # a frame's reply and log line; the segments, --speaker-lag-ms later


@dataclass
class Labels:
    """One kind of label of one conversation, scored."""
    score: Score
    hypothesis_rttm: str
    names: list[str] = field(default_factory=list)   # the hypothesis's labels
    matrix: dict[str, dict[str, float]] = field(default_factory=dict)  # who_for_whom
    phases: Phases = field(default_factory=Phases)
    latencies: list[float] = field(default_factory=list)  # turn changes: seconds to the new speaker's label
    first: float = float("inf")  # seconds from the first speech to the first label

    def as_dict(self) -> dict:
        named, spoke = stranger_named(self.matrix)
        return {**self.score.as_dict(), "hypothesis_rttm": self.hypothesis_rttm, "labels": self.names,
                "stranger_seconds": round(spoke, 3), "stranger_named_seconds": round(named, 3),
                "breakdown": breakdown(self.matrix), "turn_phases": self.phases.as_dict(),
                "turn_latencies": [round(x, 3) for x in self.latencies], "first_label": round(self.first, 3),
                "who_for_whom": self.matrix}


@dataclass
class Fold:
    encoder: str
    stranger: str  # the stranger's folder name; "" for a recorded conversation
    account: str
    seconds: float
    turns: int
    restarts: int
    reference_rttm: str
    labels: dict[str, Labels] = field(default_factory=dict)  # LABELS -> scored

    def as_dict(self) -> dict:
        return {"encoder": self.encoder, "stranger": self.stranger, "account": self.account,
                "seconds": round(self.seconds, 3), "turns": self.turns, "restarts": self.restarts,
                "reference_rttm": self.reference_rttm, **{k: v.as_dict() for k, v in self.labels.items()}}


@dataclass
class EncoderRun:
    encoder: str
    status: dict = field(default_factory=dict)  # the workers' /health speakers status: model, graph
    unavailable: str = ""                       # why its workers could not load it
    folds: list[Fold] = field(default_factory=list)   # leave one speaker out
    recorded: Fold | None = None                      # the real conversation

    def as_dict(self) -> dict:
        if self.unavailable:
            return {"unavailable": self.unavailable}
        out: dict = {"status": self.status}
        for kind in LABELS:
            labels = [f.labels[kind] for f in self.folds]
            if not labels:
                continue
            named = [stranger_named(x.matrix) for x in labels]
            sums = [breakdown(x.matrix) for x in labels]
            latencies = [v for x in labels for v in x.latencies]
            out[kind] = {**total([x.score for x in labels]).as_dict(),
                         "stranger_seconds": round(sum(s for _, s in named), 3),
                         "stranger_named_seconds": round(sum(n for n, _ in named), 3),
                         "breakdown": {k: round(sum(b[k] for b in sums), 3) for k in BREAKDOWN},
                         "turn_phases": self.phases(kind).as_dict(),
                         "turn_latency": latency_summary(latencies),
                         "first_label_median": percentile([x.first for x in labels], 50)}
        if self.recorded is not None:
            out["recorded"] = self.recorded.as_dict()
        return out

    def phases(self, kind: str) -> Phases:
        return Phases(*(sum(column) for column in zip(*(astuple(f.labels[kind].phases) for f in self.folds),
                                                      strict=True)))


def latency_summary(latencies: Sequence[float]) -> dict:
    return {"turns": len(latencies), "never": sum(1 for x in latencies if x == float("inf")),
            "p50": percentile(latencies, 50), "p90": percentile(latencies, 90)}


def scored(conversation: Conversation, reference: Sequence[timeline.Segment], hypothesis: Sequence[timeline.Segment],
           path: Path, collar: float) -> Labels:
    path.write_text(rttm(conversation.uri, hypothesis))
    return Labels(score(conversation.uri, reference, hypothesis, conversation.seconds, collar), str(path),
                  sorted({s.speaker for s in hypothesis}), who_for_whom(reference, hypothesis),
                  phases(conversation.turns, hypothesis),
                  turn_latencies(conversation.turns, hypothesis, conversation.seconds),
                  first_label(conversation.turns, hypothesis, conversation.seconds))


def measure(system: System, encoder: str, account: str, conversation: Conversation, reference_mode: str,
            out_dir: Path, name: str, collar: float) -> Fold:
    """Enroll, stream and score one conversation (immediate and final labels)."""
    enroll(system, account, conversation.enrolled)
    replies = stream(system.ws_url, account, conversation.samples)
    reference = conversation.reference(reference_mode)
    ref_path = out_dir / f"{name}.ref.rttm"
    ref_path.write_text(rttm(conversation.uri, reference))
    fold = Fold(encoder, conversation.stranger, account, conversation.seconds, len(conversation.turns),
                conversation.restarts, str(ref_path))
    for kind, hyp in (("immediate", hypothesis(system, account, replies)),
                      ("final", final_hypothesis(system, account, replies))):
        fold.labels[kind] = scored(conversation, reference, hyp, out_dir / f"{name}.{kind}.hyp.rttm", collar)
    return fold


def run_encoder(encoder: str, a: argparse.Namespace, speakers: Mapping[str, Sequence[Path]], strangers: list[str],
                vad: VadEngine, root: Path) -> EncoderRun:
    options = build_options(a)
    out_dir = a.out_dir / encoder
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        system, status = start(encoder, root / encoder, a.ecapa_source, a.workers, a.lag_ms)
    except EncoderUnavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EncoderRun(encoder, unavailable=str(exc))
    run = EncoderRun(encoder, status)
    try:
        for stranger in strangers:
            fold = list(speakers).index(stranger)
            account = f"conv-{encoder}-{fold}"  # the system and its store are fresh: no one enrolled yet
            conversation = build(stranger, speakers, options, vad, fold, uri=f"{encoder}-{stranger}")
            run.folds.append(measure(system, encoder, account, conversation, options.reference, out_dir, stranger,
                                     a.collar))
            for kind in LABELS:
                print(row(encoder, f"{stranger} {kind[:3]}", run.folds[-1].labels[kind]), file=sys.stderr, flush=True)
        if a.recorded is not None:
            wav, rttm_path = a.recorded
            conversation = recorded(wav, rttm_path, root / encoder / "recorded", uri=f"{encoder}-recorded")
            run.recorded = measure(system, encoder, f"conv-{encoder}-recorded", conversation, "speech", out_dir,
                                   "recorded", a.collar)
    finally:
        system.stop()
    return run


def build_options(a: argparse.Namespace) -> BuildOptions:
    return BuildOptions(a.enroll_files, a.turns_each, tuple(a.turn_seconds), tuple(a.pause_seconds), a.seed,
                        a.reference)


HEADER = (f"{'encoder':<8} {'conversation':<16} {'scored s':>8} {'IER':>6} {'confusion':>9} {'missed':>7} "
          f"{'false al.':>9} {'stranger named':>14} {'turn latency p50/p90':>21} {'first label':>11}")


def seconds_text(value: float | None) -> str:
    return "-" if value is None else ("never" if value == float("inf") else f"{value:.2f} s")


def row(encoder: str, name: str, labels: Labels | None = None, *, score_: Score | None = None,
        named: tuple[float, float] | None = None, latencies: Sequence[float] | None = None,
        first: float | None = None) -> str:
    """Components as % of the scored reference speech; the stranger's speech
    given an enrolled name as % of the stranger's speech; latencies."""
    if labels is not None:
        score_, named = labels.score, stranger_named(labels.matrix)
        latencies, first = labels.latencies, labels.first
    assert score_ is not None and named is not None and latencies is not None

    def pct(x: float, of: float) -> str:
        return f"{100 * x / of:.1f}%" if of else "-"
    s = score_
    lat = f"{seconds_text(percentile(latencies, 50))} / {seconds_text(percentile(latencies, 90))}"
    return (f"{encoder:<8} {name:<16} {s.speech:>8.1f} {pct(s.ier * s.speech, s.speech):>6} "
            f"{pct(s.confusion, s.speech):>9} {pct(s.missed, s.speech):>7} {pct(s.false_alarm, s.speech):>9} "
            f"{pct(*named):>14} {lat:>21} {seconds_text(first):>11}")


def table(runs: Sequence[EncoderRun]) -> str:
    """A row per fold and kind of label, then each encoder's total over its
    folds (components summed), then the recorded conversation."""
    lines = [HEADER]
    for run in runs:
        if run.unavailable:
            lines.append(f"{run.encoder:<8} unavailable: the workers could not load it (above)")
            continue
        for kind in LABELS:
            labels = [f.labels[kind] for f in run.folds]
            lines += [row(run.encoder, f"{f.stranger} {kind[:3]}", x) for f, x in zip(run.folds, labels, strict=True)]
            named = [stranger_named(x.matrix) for x in labels]
            if labels:
                lines.append(row(run.encoder, f"all {kind}", score_=total([x.score for x in labels]),
                                 named=(sum(n for n, _ in named), sum(s for _, s in named)),
                                 latencies=[v for x in labels for v in x.latencies],
                                 first=percentile([x.first for x in labels], 50)))
        if run.recorded is not None:
            for kind in LABELS:
                lines.append(row(run.encoder, f"recorded {kind}", run.recorded.labels[kind]))
    for run in runs:
        for kind in LABELS:
            if run.folds:
                p = run.phases(kind)
                head, rest = 100 * p.head_wrong / max(p.head, 1e-9), 100 * p.rest_wrong / max(p.rest, 1e-9)
                lines.append(f"{run.encoder} {kind}: wrong label on {head:.0f}% of the speech in the first "
                             f"{HEAD_SECONDS:g} s of a turn, {rest:.0f}% after")
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
    p.add_argument("--lag-ms", type=int, default=1000,
                   help="the workers' --speaker-lag-ms: when final labels come (default: %(default)s, theirs)")
    p.add_argument("--recorded", nargs=2, type=Path, metavar=("WAV", "RTTM"), default=RECORDED,
                   help="also a recorded conversation and its reference, its speakers enrolled from where only they "
                        "speak in it (default: the one in ../shared/data/conversation when it is there)")
    p.add_argument("--no-recorded", dest="recorded", action="store_const", const=None,
                   help="leave the recorded conversation out")
    p.add_argument("--json-out", type=Path, help="write every fold's figures here as JSON")
    a = p.parse_args(argv)
    if not 0 <= a.lag_ms <= 1000:
        p.error("--lag-ms must be 0 to 1000, as the workers' --speaker-lag-ms")
    if a.recorded is not None and not all(path.is_file() for path in a.recorded):
        if a.recorded == RECORDED:
            a.recorded = None  # the default, absent: measured where it is there
        else:
            p.error(f"--recorded: {' or '.join(str(x) for x in a.recorded if not x.is_file())} is not a file")
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
    print(f"collar ±{a.collar:g} s, reference: {a.reference}, final labels {a.lag_ms} ms after their frame, "
          f"commit {commit()}")
    if a.recorded is not None:
        print("recorded: its speakers are enrolled from where only they speak in it, audio it then streams "
              "(the figures are optimistic)")
    if a.json_out is not None:
        a.json_out.parent.mkdir(parents=True, exist_ok=True)
        a.json_out.write_text(json.dumps({
            "commit": commit(), "folder": str(a.folder), "collar": a.collar, "reference": a.reference,
            "options": asdict(build_options(a)), "ecapa_source": a.ecapa_source, "workers": a.workers,
            "lag_ms": a.lag_ms, "recorded": [str(x) for x in a.recorded] if a.recorded else None,
            "encoders": {run.encoder: run.as_dict() for run in runs},
            "folds": [f.as_dict() for run in runs for f in run.folds]}, indent=2) + "\n")
    return 1 if any(run.unavailable for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
