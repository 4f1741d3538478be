"""scripts/bench.py: its pure helpers, and one short real level against the system."""
import asyncio
import io

import numpy as np
import pytest
import soundfile as sf

from bench import (FRAME_SECONDS, BenchError, Criteria, LevelPlan, StreamRecord, Target, find_max,
                   format_table, judge, load_speakers, load_speech_sources, next_n, parse_pids,
                   percentiles, run_level, split_frames, window_stats)
from cluster import REPO

OWN_SAMPLE = REPO / "data" / "us_male_8k.wav"


def test_split_frames_gives_whole_100ms_wavs_that_rebuild_the_source():
    samples, rate = sf.read(OWN_SAMPLE, dtype="int16")
    frames = split_frames(samples, rate)
    assert len(frames) == len(samples) // (rate // 10)
    decoded = [sf.read(io.BytesIO(f), dtype="int16") for f in frames]
    assert {r for _, r in decoded} == {rate}
    assert {len(s) for s, _ in decoded} == {rate // 10}
    np.testing.assert_array_equal(np.concatenate([s for s, _ in decoded]), samples[:len(frames) * rate // 10])


def test_load_speech_sources_reads_real_wavs(speech):
    sources = load_speech_sources([speech("sample1.wav"), speech("en_example.wav")])
    assert [(s.name, s.sample_rate) for s in sources] == [("sample1.wav", 8000), ("en_example.wav", 16000)]
    assert len(sources[1].frames) == 600  # 60 s


def test_load_speakers_keeps_enrollment_and_streamed_speech_apart(speakers_dir):
    speakers = load_speakers(speakers_dir, enroll_seconds=4.0)
    assert len(speakers) >= 2
    for s in speakers:
        enroll, rate = sf.read(io.BytesIO(s.enroll_wav), dtype="int16")
        assert rate == s.sample_rate and len(enroll) >= 4 * rate and len(s.held_out) > 0


def test_percentiles_ignore_nan_and_say_none_when_empty():
    assert percentiles([1, 2, 3, 4, np.nan], (50,)) == {"p50": 2.5}
    assert percentiles([], (50, 99)) == {"p50": None, "p99": None}


def test_window_stats_counts_late_lost_and_error_frames():
    rec = StreamRecord.planned("a", t0=100.0, offset=0.0, n_frames=10)
    rec.sent[:] = rec.due
    rec.replied[:] = rec.due + 0.01
    rec.replied[3] = rec.due[3] + 0.25  # late: after frame 4 was due
    rec.replied[5] = np.nan  # never answered
    rec.failed[7] = True
    rec.model_ms[:] = 1.0
    stats = window_stats([rec], w0=100.0, w1=101.0, late_tolerance=0.1)
    assert (stats.frames, stats.lost, stats.late, stats.error_replies) == (10, 1, 2, 1)
    assert stats.behind_streams == 1  # 2 of 10 late > 10 %
    assert len(stats.e2e) == 9 and len(stats.model) == 8
    assert stats.replied == 9  # by arrival in the window: all but the lost one
    assert window_stats([rec], 100.0, 101.0, late_tolerance=0.5).behind_streams == 0


def test_judge_names_every_reason_a_level_failed():
    c = Criteria(p99_bound_ms=100, late_tolerance=0.01)
    assert judge(10, 100.0, 20.0, 0, 0, 0, 0, c) == []
    reasons = judge(10, 90.0, 150.0, 1, 2, 3, 4, c)
    assert len(reasons) == 5
    assert judge(10, 100.0, None, 0, 0, 0, 0, c) == ["no replies"]


def test_next_n_multiplies_or_adds():
    assert next_n(10, 1.5, 0) == 15
    assert next_n(1, 1.2, 0) == 2  # always grows
    assert next_n(10, 1.5, 25) == 35


def test_find_max_bisects_between_last_held_and_first_failed():
    ran = []

    def run(n):
        ran.append(n)
        return {"n": n, "held": n <= 37}
    held, levels = find_max(run, start=10, factor=2, add=0, max_n=1000, refine=10)
    assert held == 37
    assert ran[:3] == [10, 20, 40] and len(levels) == len(ran)


def test_find_max_reports_none_when_the_first_level_fails():
    held, levels = find_max(lambda n: {"n": n, "held": False}, 10, 1.5, 0, 1000, refine=0)
    assert held is None and len(levels) == 1


def test_target_from_url_accepts_http_and_ws_forms():
    assert Target.from_url("http://h:6001/") == Target("http://h:6001", "ws://h:6001/ws")
    assert Target.from_url("ws://h:6001/ws").http_url == "http://h:6001"
    with pytest.raises(BenchError, match="--url must start"):
        Target.from_url("h:6001")


def test_parse_pids_refuses_garbage():
    with pytest.raises(BenchError, match="NAME=PID"):
        parse_pids("balancer=abc")


def test_a_short_real_level_gets_every_frame_answered(system, speech):
    sources = load_speech_sources([speech("sample1.wav"), speech("en_example.wav")])
    plan = LevelPlan(n=3, seconds=1.0, warmup=0.2)
    level = asyncio.run(run_level(plan, Target(system.url, system.ws_url), sources, None, Criteria()))
    assert level["errors"] == 0, level["error_messages"]
    assert level["frames"] == 3 * round(1.0 / FRAME_SECONDS)
    assert level["e2e_ms"]["p50"] is not None and level["model_ms"]["p50"] is not None
    assert sum(level["frames_per_worker"].values()) >= level["frames"]
    assert "3" in format_table([level])


def test_port_free_sees_a_listening_socket():
    import socket
    from bench import port_free
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free(port)
    assert port_free(port)
