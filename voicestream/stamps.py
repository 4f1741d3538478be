"""Frame stamps: the balancer's time for a frame, its identity across retries.

A stamp is UTC microseconds since the epoch. The balancer gives each frame one
(FrameClock) and sends the same stamp with every attempt; the worker writes it
as the start of the frame's log line and the reply's ``time`` field.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1)
TEXT_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # '2023-01-20 13:44:44.123435'
SECOND_FORMAT = TEXT_FORMAT.removesuffix(".%f")
MAX_STAMP_DIGITS = 17  # years beyond 9999 do not fit the log line's format


class FrameClock:
    """Stamps strictly increasing within one balancer: two frames never share
    one, even of the same account in the same microsecond."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(time.time_ns() // 1000, self._last + 1)
        return self._last


def stamp_time(stamp: int) -> datetime:
    """The naive UTC datetime of a stamp."""
    return EPOCH + timedelta(microseconds=stamp)


def stamp_micros(when: datetime) -> int:
    """A naive UTC datetime as a stamp: stamp_time's inverse."""
    return (when - EPOCH) // timedelta(microseconds=1)


# The last second stamp_text formatted, and its text: frames come many to a
# second, and strftime was 3.5% of a busy balancer's CPU (py-spy, 200 VAD
# streams) and as much again of a worker's, which formats each frame's time
# for its line, its reply and its events. Replaced whole (one tuple), so
# threads may share it.
_last_second: tuple[int, str] = (-1, "")


def stamp_text(stamp: int) -> str:
    """The stamp as a log line and a reply's 'time' show it."""
    global _last_second
    seconds, micros = divmod(stamp, 1_000_000)
    second, text = _last_second
    if second != seconds:
        text = (EPOCH + timedelta(seconds=seconds)).strftime(SECOND_FORMAT)
        _last_second = (seconds, text)
    return f"{text}.{micros:06d}"


def text_stamp(text: str) -> int:
    """A stamp from its text (stamp_text's inverse); ValueError if text is not
    one ('2023-01-20 13:44:44.123435', the fraction optional)."""
    fmt = TEXT_FORMAT if "." in text else SECOND_FORMAT
    return stamp_micros(datetime.strptime(text, fmt))


def check_stamp(value: object) -> int:
    """A stamp as it arrives in a batch (int) or a header (digits), checked."""
    if type(value) is int and 0 <= value < 10**MAX_STAMP_DIGITS:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= MAX_STAMP_DIGITS:
        return int(value)
    raise ValueError("frame stamp must be microseconds since the epoch (at most 17 digits)")


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
