"""A frame's log line is written once, whichever worker gets there first:
FrameLog.append(once=True) checks for the frame's stamp and appends under
one flock, across threads and processes."""
from __future__ import annotations

import multiprocessing
from datetime import datetime, timedelta

from voicestream.logline import format_line
from voicestream.stamps import check_stamp, stamp_time
from worker.storage.framelog import FrameLog

T0 = datetime(2023, 1, 20, 13, 44, 44, 123435)


def line(i: int, port: int = 7001) -> str:
    return format_line(T0 + timedelta(microseconds=i), 1, port, 3)


def test_a_stamped_frame_is_logged_once(tmp_path):
    log = FrameLog(tmp_path)
    assert log.append("a", line(1), once=True)
    assert not log.append("a", line(1, port=7002), once=True)  # the retry on another worker
    assert log.append("a", line(2, port=7002), once=True)
    assert not log.append("a", line(1, port=7003), once=True)
    assert (tmp_path / "a.txt").read_text() == line(1) + line(2, port=7002)


def test_unstamped_lines_are_always_written(tmp_path):
    log = FrameLog(tmp_path)
    assert log.append("a", line(1)) and log.append("a", line(1))
    assert len((tmp_path / "a.txt").read_text().splitlines()) == 2


def test_a_partial_line_left_by_a_killed_writer_is_dropped(tmp_path):
    log = FrameLog(tmp_path)
    log.append("a", line(1), once=True)
    with open(tmp_path / "a.txt", "a") as f:
        f.write(line(2)[:30])  # killed inside write(): the frame was never answered
    assert log.append("a", line(2, port=7002), once=True)  # its retry is logged, whole
    assert (tmp_path / "a.txt").read_text() == line(1) + line(2, port=7002)


def test_only_line_starts_count(tmp_path):
    log = FrameLog(tmp_path)
    stamp = line(5)[:26]
    log.append("a", format_line(T0, 1, 7001, 3, speaker=stamp, score=0.5), once=True)
    assert log.append("a", line(5), once=True)


def test_a_line_another_worker_wrote_since_is_seen(tmp_path):
    # Each FrameLog remembers its last append to skip reading the tail; a
    # line another process wrote after it must still stop the same frame.
    mine, other = FrameLog(tmp_path), FrameLog(tmp_path)
    assert mine.append("a", line(1), once=True)
    assert other.append("a", line(2, port=7002), once=True)  # frame 2 went to the retry's worker first
    assert not mine.append("a", line(2), once=True)
    assert mine.append("a", line(3), once=True)
    assert not mine.append("a", line(3, port=7003), once=True)  # the same stamp, right after: still read
    assert (tmp_path / "a.txt").read_text() == line(1) + line(2, port=7002) + line(3)


def test_a_rotated_log_is_read_again(tmp_path):
    log = FrameLog(tmp_path)
    assert log.append("a", line(1), once=True)
    (tmp_path / "a.txt").rename(tmp_path / "a.txt.1")  # logrotate's default: a new file
    assert FrameLog(tmp_path).append("a", line(2, port=7002), once=True)
    assert not log.append("a", line(2), once=True)
    assert log.append("a", line(3), once=True)
    assert (tmp_path / "a.txt").read_text() == line(2, port=7002) + line(3)


def test_many_frames_in_order_each_once(tmp_path):
    # The path without reads, then retries of lines far back and just behind.
    log = FrameLog(tmp_path)
    assert all(log.append("a", line(i), once=True) for i in range(1000))
    assert not any(log.append("a", line(i, port=7002), once=True) for i in (999, 998, 500, 999))
    assert log.append("a", line(1000), once=True)
    stamps = [text[:26] for text in (tmp_path / "a.txt").read_text().splitlines()]
    assert stamps == [line(i)[:26] for i in range(1001)]


def test_lines_that_are_not_one_frame_line_read_the_tail(tmp_path):
    # Only a whole frame line is remembered: short lines, two lines at once
    # and a line without its end behave as without the memory.
    log = FrameLog(tmp_path)
    assert log.append("a", "x\n", once=True) and log.append("a", "w\n", once=True)
    assert not log.append("a", "x\n", once=True)
    assert log.append("a", line(1), once=True)  # remembered: its tail holds "x", "w" and line 1
    assert not log.append("a", "x\n", once=True)  # still read, not taken for a newer stamp
    assert log.append("b", line(1) + line(2), once=True)
    assert not log.append("b", line(2), once=True)
    assert log.append("c", line(1), once=True) and log.append("c", line(2).rstrip("\n"), once=True)
    assert log.append("c", line(3), once=True)  # the unfinished line is dropped, not glued to
    assert (tmp_path / "c.txt").read_text() == line(1) + line(3)


def _race(directory: str, worker: int, frames: int) -> None:
    log = FrameLog(directory)
    for i in range(frames):
        log.append("raced", line(i, port=7000 + worker), once=True)


def test_racing_processes_log_each_frame_once(tmp_path):
    # Four processes (a slow worker and the retries' workers) all handle the
    # same 300 frames at the same time: each frame gets exactly one line.
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_race, args=(str(tmp_path), w, 300)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    stamps = [text[:26] for text in (tmp_path / "raced.txt").read_text().splitlines()]
    assert len(stamps) == 300 and len(set(stamps)) == 300


def test_frame_time_header():
    assert stamp_time(check_stamp("1674222284123435")) == datetime(2023, 1, 20, 13, 44, 44, 123435)
    for bad in ("", "-1", "1.5", "１２", "9" * 18, "12a"):
        try:
            check_stamp(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


def test_the_log_never_takes_a_path_from_the_account(tmp_path):
    import pytest
    log = FrameLog(tmp_path / "logs")
    for code in ("../x", "a/b", "", "x" * 65, "..", "a\x00"):
        with pytest.raises(ValueError):
            log.append(code, line(1))
    assert list(tmp_path.iterdir()) == [tmp_path / "logs"] and not any((tmp_path / "logs").iterdir())
