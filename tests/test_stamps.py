"""Frame stamps as text: the log line's and the reply's time, whatever second
the formatter saw last."""
from __future__ import annotations

import random
import threading

from voicestream.logline import format_line, stamp_line
from voicestream.stamps import TEXT_FORMAT, stamp_text, stamp_time, text_stamp


def strftime_text(stamp: int) -> str:
    return stamp_time(stamp).strftime(TEXT_FORMAT)


def test_stamp_text_is_strftime_across_seconds_and_in_any_order() -> None:
    rng = random.Random(7)
    t0 = 1_674_222_284_000_000  # 2023-01-20 13:44:44
    stamps = [0, 1, 999_999, 1_000_000, t0 - 1, t0, t0 + 999_999, t0 + 1_000_000, 10**17 - 1]
    stamps += [t0 + rng.randrange(-3_000_000, 3_000_000) for _ in range(2000)]  # back and forth over seconds
    stamps += [rng.randrange(10**17) for _ in range(2000)]
    for stamp in stamps:
        assert stamp_text(stamp) == strftime_text(stamp), stamp
        assert text_stamp(stamp_text(stamp)) == stamp
    assert stamp_text(t0 + 123_435) == "2023-01-20 13:44:44.123435"


def test_stamp_text_from_many_threads_at_once() -> None:
    t0 = 1_674_222_284_000_000
    wrong: list[int] = []

    def run(offset: int) -> None:
        for i in range(3000):
            stamp = t0 + (i * 333_333 + offset) % 9_000_000  # every thread crosses seconds, out of step
            if stamp_text(stamp) != strftime_text(stamp):
                wrong.append(stamp)

    threads = [threading.Thread(target=run, args=(k * 170_001,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_stamp_line_is_format_line_of_the_stamps_time() -> None:
    stamp = 1_674_222_284_123_435
    assert stamp_line(stamp, 1, 7001, 31.2, "alice", 0.7139) == \
        format_line(stamp_time(stamp), 1, 7001, 31.2, "alice", 0.7139) == \
        "2023-01-20 13:44:44.123435 voice=1, 7001, 31ms, speaker=alice, score=0.71\n"
