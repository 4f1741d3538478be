"""Scoring: pyannote.metrics' identification error rate (confusion, missed
detection, false alarm) and who was taken for whom."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, astuple, dataclass
from typing import Any

from voicestream.wav import FRAME_SECONDS
from voicetools import timeline

from . import ConversationError
from .build import UNKNOWN, Turn

# The collar: seconds either side of each reference boundary left unscored
# (md-eval's -c; pyannote's collar is the whole width, twice this). The
# reference's boundaries are silero's 32 ms chunks, the hypothesis's 100 ms
# frames, so the same speech can start up to 0.1 s apart.
COLLAR = 0.25



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


def breakdown(matrix: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """who_for_whom in seven sums: each enrolled speaker's speech named right,
    as another enrolled speaker, unknown or no one; the stranger's speech
    called unknown, given an enrolled name, or no one."""
    out = dict.fromkeys(BREAKDOWN, 0.0)
    for ref, row in matrix.items():
        for hyp, seconds in row.items():
            if ref == UNKNOWN:
                key = {UNKNOWN: "stranger_unknown", NONE: "stranger_none"}.get(hyp, "stranger_named")
            else:
                key = {ref: "enrolled_right", UNKNOWN: "enrolled_unknown", NONE: "enrolled_none"}.get(
                    hyp, "enrolled_other")
            out[key] += seconds
    return {k: round(v, 3) for k, v in out.items()}


BREAKDOWN = ("enrolled_right", "enrolled_other", "enrolled_unknown", "enrolled_none",
             "stranger_unknown", "stranger_named", "stranger_none")


def stranger_named(matrix: Mapping[str, Mapping[str, float]]) -> tuple[float, float]:
    """(seconds of the stranger's speech given an enrolled name, seconds of the stranger's speech)."""
    row = matrix.get(UNKNOWN, {})
    return sum(v for k, v in row.items() if k not in (UNKNOWN, NONE)), sum(row.values())




# A turn's head: a worker's 2 s window still holds the previous voice there
# (docs/speakers.md#streaming), so wrong names cluster in it. Measured at
# f5efad9 (GE2E, 4 folds): 68% of the heads' speech wrongly named, 12% after.
HEAD_SECONDS = 2.0


@dataclass
class Phases:
    """Reference speech given a wrong label (another name, unknown for an
    enrolled speaker, a name for the stranger; no decision is not counted),
    in the first head seconds of each turn and after them."""
    head_wrong: float = 0.0
    head: float = 0.0
    rest_wrong: float = 0.0
    rest: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


def phases(turns: Sequence[Turn], hypothesis: Sequence[timeline.Segment], head: float = HEAD_SECONDS) -> Phases:
    out = Phases()
    for turn in turns:
        cut = turn.start + head
        for start, end in turn.speech:
            for lo, hi, is_head in ((start, min(end, cut), True), (max(start, cut), end, False)):
                if hi <= lo:
                    continue
                wrong = sum(max(0.0, min(hi, h.end) - max(lo, h.start)) for h in hypothesis if h.speaker != turn.label)
                if is_head:
                    out.head, out.head_wrong = out.head + hi - lo, out.head_wrong + wrong
                else:
                    out.rest, out.rest_wrong = out.rest + hi - lo, out.rest_wrong + wrong
    return out


# --- how fast labels follow the turns ---------------------------------------------

FRAME = FRAME_SECONDS  # the stream's frames: a hypothesis segment starts and ends on them


def labels_per_frame(hypothesis: Sequence[timeline.Segment], seconds: float) -> list[str | None]:
    """The hypothesis's label of each 100 ms frame of the conversation."""
    out: list[str | None] = [None] * int(round(seconds / FRAME))
    for s in hypothesis:
        for k in range(max(0, int(round(s.start / FRAME))), min(len(out), int(round(s.end / FRAME)))):
            out[k] = s.speaker
    return out


def turn_latencies(turns: Sequence[Turn], hypothesis: Sequence[timeline.Segment], seconds: float) -> list[float]:
    """For each turn whose speaker is not the previous turn's: seconds from its
    first reference speech to the end of the first frame, within the turn,
    labelled with its label (the moment that label exists); inf when no frame
    of the turn is."""
    labels = labels_per_frame(hypothesis, seconds)
    out: list[float] = []
    for before, turn in zip(turns, turns[1:], strict=False):
        if before.label == turn.label or not turn.speech:
            continue
        start, end = turn.speech[0][0], turn.speech[-1][1]
        first = next((k for k in range(int(start / FRAME), min(len(labels), int(end / FRAME) + 1))
                      if labels[k] == turn.label), None)
        out.append((first + 1) * FRAME - start if first is not None else float("inf"))
    return out


def first_label(turns: Sequence[Turn], hypothesis: Sequence[timeline.Segment], seconds: float) -> float:
    """Seconds from the conversation's first reference speech to the end of the
    first frame with any label; inf if none."""
    labels = labels_per_frame(hypothesis, seconds)
    spoken = [t.speech[0][0] for t in turns if t.speech]
    if not spoken:
        return float("inf")
    start = min(spoken)
    first = next((k for k in range(int(start / FRAME), len(labels)) if labels[k] is not None), None)
    return (first + 1) * FRAME - start if first is not None else float("inf")

