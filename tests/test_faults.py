"""voicetools.faults (voicestream-faults) without processes: its frames, and
how it matches frames to log lines (the scenarios themselves run in
test_failover.py and test_shutdown.py)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from voicestream.logline import format_line
from voicestream.stamps import FrameClock, stamp_text, stamp_time
from voicetools.cluster import make_system
from voicetools.faults import AccountRun, Frame, frames_of, seconds, tally
from voicetools.paths import REPO

SAMPLE = REPO / "data" / "us_male_8k.wav"


def test_frames_of_gives_whole_100ms_frames_of_the_first_seconds():
    samples, rate = sf.read(SAMPLE, dtype="int16")
    frames = frames_of(SAMPLE, seconds=2.05)
    assert len(frames) == 20  # the half frame at 2.0-2.05 s is dropped
    decoded = [sf.read(io.BytesIO(f), dtype="int16") for f in frames]
    assert {(len(s), r) for s, r in decoded} == {(rate // 10, rate)}
    np.testing.assert_array_equal(np.concatenate([s for s, _ in decoded]), samples[:2 * rate])
    assert len(frames_of(SAMPLE)) == len(samples) // (rate // 10)  # shorter than 20 s: all whole frames


def answered(seq: int, stamp: str, **reply: object) -> Frame:
    return Frame(seq=seq, sent=0.0, reply={"seq": seq, "time": stamp, "worker": 7001, **reply}, replied=1.0)


def test_tally_matches_replies_to_well_formed_lines_only(tmp_path: Path):
    system = make_system(tmp_path)  # never started: only its log directory is used
    system.log_dir.mkdir()
    clock = FrameClock()  # five distinct stamps, as the balancer gives frames
    raw = [clock.next() for _ in range(5)]
    when, stamps = [stamp_time(r) for r in raw], [stamp_text(r) for r in raw]
    lines = [format_line(when[0], 1, 7001, 3),
             format_line(when[1], 0, 7001, 2), format_line(when[1], 0, 7002, 2),  # logged twice
             format_line(when[2], 1, 7001, 3)[:40] + "\n",  # torn: its frame has no whole line
             format_line(when[4], 1, 7001, 3)]  # no reply accounts for it
    (system.log_dir / "acct.txt").write_text("".join(lines))
    run = AccountRun("acct", [answered(1, stamps[0]), answered(2, stamps[1]), answered(3, stamps[2]),
                              answered(4, stamps[3], duplicate=True), Frame(seq=5, sent=0.0)])
    t = tally(system, {"acct": run})
    assert (t.sent, t.replied, t.errors) == (5, 4, 0)
    assert t.logged == 2  # frames 1 and 2
    assert t.lost == 3  # frame 3 (torn line), frame 4 (no line), frame 5 (no reply)
    assert t.duplicated == 2  # frame 2's second line, and the line no reply accounts for
    assert t.malformed == 1 and t.saved_duplicates == 1


def test_seconds_reads_min_p50_max():
    assert seconds([]) == "-"
    assert seconds([0.4, 0.1, 0.2, 0.3]) == "min 100 ms, p50 200 ms, max 400 ms"
