"""The per-account log line format is a contract with existing tooling."""
from __future__ import annotations

import threading
from datetime import datetime

from voicestream.logline import format_line, parse_line
from worker.storage.framelog import FrameLog


def is_line(text: str) -> bool:
    return text.endswith("\n") and parse_line(text) is not None


def test_exact_format():
    when = datetime(2023, 1, 20, 13, 44, 44, 123435)
    assert format_line(when, 1, 7001, 4.4) == "2023-01-20 13:44:44.123435 voice=1, 7001, 4ms\n"
    assert format_line(when, 0, 7002, 0.4) == "2023-01-20 13:44:44.123435 voice=0, 7002, 0ms\n"
    assert format_line(datetime(2023, 1, 20, 13, 44, 44), 0, 7001, 12.5) == \
        "2023-01-20 13:44:44.000000 voice=0, 7001, 12ms\n"  # round half to even, like round()


def test_speaker_suffix_keeps_the_prefix():
    when = datetime(2023, 1, 20, 13, 44, 44, 123435)
    assert format_line(when, 1, 7001, 31.2, "alice", 0.7139) == \
        "2023-01-20 13:44:44.123435 voice=1, 7001, 31ms, speaker=alice, score=0.71\n"
    assert is_line(format_line(when, 1, 7001, 31.2, "unknown", 0.2))


def test_concurrent_writers_never_interleave(tmp_path):
    log = FrameLog(tmp_path)
    when = datetime(2023, 1, 20, 13, 44, 44, 123435)

    def write(port: int) -> None:
        for _ in range(500):
            log.append("acct", format_line(when, 1, port, 3, "speaker_" + "x" * 200, 0.5))
    threads = [threading.Thread(target=write, args=(7000 + i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "acct.txt").read_text().splitlines(keepends=True)
    assert len(lines) == 4000 and all(is_line(line) for line in lines)
