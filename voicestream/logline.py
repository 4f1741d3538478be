"""The per-account log line: its one format and its one parser.

The prefix is a contract with existing tooling and must not change:
    2023-01-20 13:44:44.123435 voice=1, 7001, 4ms
Speaker verification appends ", speaker=alice, score=0.71" after it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from .stamps import TEXT_FORMAT, stamp_text

STAMP_CHARS = len("2023-01-20 13:44:44.123435")
STAMP_PATTERN = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}"  # stamp_text's form (TEXT_FORMAT)
LOG_LINE = re.compile(
    rf"(?P<time>{STAMP_PATTERN}) voice=(?P<voice>[01]), (?P<worker>\d+), (?P<ms>\d+)ms"
    r"(?:, speaker=(?P<speaker>[^,\s]+)(?:, score=(?P<score>-?\d+\.\d{2}))?)?")


def format_line(when: datetime, voice: int, port: int, model_ms: float,
                speaker: str | None = None, score: float | None = None) -> str:
    return _line(when.strftime(TEXT_FORMAT), voice, port, model_ms, speaker, score)


def stamp_line(stamp: int, voice: int, port: int, model_ms: float,
               speaker: str | None = None, score: float | None = None) -> str:
    """format_line of a frame stamp (voicestream/stamps.py), without a datetime."""
    return _line(stamp_text(stamp), voice, port, model_ms, speaker, score)


def _line(when: str, voice: int, port: int, model_ms: float, speaker: str | None, score: float | None) -> str:
    line = f"{when} voice={voice}, {port}, {round(model_ms)}ms"
    if speaker is not None:
        line += f", speaker={speaker}"
        if score is not None:
            line += f", score={score:.2f}"
    return line + "\n"


@dataclass(frozen=True, slots=True)
class LogLine:
    time: str
    voice: int
    worker: int
    ms: int
    speaker: str | None = None
    score: float | None = None


def parse_line(line: str) -> LogLine | None:
    """The fields of one log line, or None if it is not one (whole line only)."""
    m = LOG_LINE.fullmatch(line.rstrip("\n"))
    if m is None:
        return None
    score = m["score"]
    return LogLine(m["time"], int(m["voice"]), int(m["worker"]), int(m["ms"]), m["speaker"],
                   float(score) if score is not None else None)
