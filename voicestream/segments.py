"""The per-account segments file: final speaker labels, one line per segment
(events.Segment), beside the frame log: <log-dir>/<ACCOUNTCODE>.segments.txt.

    2023-01-20 13:44:44.123435 2023-01-20 13:44:45.923435 speaker=alice, score=0.71, seqs=12-30, frames=19, \
        stream=9f1c...

The two stamps are the segment's first and last frames' (as their log lines
start); seqs are the frames' numbers in their stream. Its one format and its
one parser, like logline.py's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .events import SEGMENT, Segment
from .logline import STAMP_PATTERN

SEGMENT_LINE = re.compile(
    rf"(?P<start>{STAMP_PATTERN}) (?P<end>{STAMP_PATTERN}) "
    r"speaker=(?P<speaker>[^,\s]+), score=(?P<score>-?\d+\.\d{2}|none), "
    r"seqs=(?P<start_seq>\d+)-(?P<end_seq>\d+), frames=(?P<frames>\d+), stream=(?P<stream>\S*)")


@dataclass(frozen=True, slots=True)
class SegmentLine:
    start: str
    end: str
    speaker: str
    score: float | None
    start_seq: int
    end_seq: int
    frames: int
    stream: str

    def event(self) -> Segment:
        return {"type": SEGMENT, "speaker": self.speaker, "score": self.score, "start": self.start, "end": self.end,
                "start_seq": self.start_seq, "end_seq": self.end_seq, "frames": self.frames, "final": True}


def format_segment(segment: Segment, stream: str) -> str:
    score = "none" if segment["score"] is None else f"{segment['score']:.2f}"
    return (f"{segment['start']} {segment['end']} speaker={segment['speaker']}, score={score}, "
            f"seqs={segment['start_seq']}-{segment['end_seq']}, frames={segment['frames']}, stream={stream}\n")


def parse_segment(line: str) -> SegmentLine | None:
    """The fields of one segments-file line, or None if it is not one (whole line only)."""
    m = SEGMENT_LINE.fullmatch(line.rstrip("\n"))
    if m is None:
        return None
    score = None if m["score"] == "none" else float(m["score"])
    return SegmentLine(m["start"], m["end"], m["speaker"], score, int(m["start_seq"]), int(m["end_seq"]),
                       int(m["frames"]), m["stream"])
