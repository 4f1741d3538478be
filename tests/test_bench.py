"""voicetools.bench (voicestream-bench): its pure parts, its command line,
and one short real level against the system."""
from __future__ import annotations

import asyncio
import io
import math
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import psycopg
import pytest
import soundfile as sf

from voicestream.wav import FRAME_SECONDS
from voicetools.bench import BenchError
from voicetools.bench.audio import load_speakers, load_speech_sources, whole_frames
from voicetools.bench.compare import compare_levels, side_order
from voicetools.bench.config import RESULTS_DIR, parse_args
from voicetools.bench.database import BenchDatabase, listening_pid, postmaster_pid
from voicetools.bench.levels import check_rows
from voicetools.bench.processes import DATABASE_SERVER, ProcessWatch, parse_pids, tree_cpu_seconds
from voicetools.bench.report import COMPARISON_HEAD, PROCESS_TABLE_TITLE, TABLE_HEAD, format_comparison, format_table
from voicetools.bench.run import run_bench
from voicetools.bench.search import find_max, next_n
from voicetools.bench.stats import (
    Criteria,
    LevelPlan,
    StreamRecord,
    answered_frames,
    judge,
    sent_frames,
    summarize,
    window_stats,
)
from voicetools.bench.streams import TAIL_SECONDS, Target, run_level
from voicetools.bench.systems import port_free
from voicetools.cluster import free_port, wait_until
from voicetools.paths import REPO
from voicetools.postgres import PostgresServer, PostgresUnavailable

pytest_plugins = ["pg"]  # pg_server

OWN_SAMPLE = REPO / "data" / "us_male_8k.wav"


# ------------------------------------------------------------------ audio


def test_whole_frames_are_100ms_wavs_that_rebuild_the_source_less_its_tail():
    samples, rate = sf.read(OWN_SAMPLE, dtype="int16")
    assert len(samples) % (rate // 10), "the sample should have a short tail for this test"
    frames = whole_frames(samples, rate)
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
        # Enrollment then held-out speech is every recording of the speaker
        # in order, each sample once: the two never overlap.
        recorded = [sf.read(path, dtype="int16")[0] for path in sorted((speakers_dir / s.name).glob("*.wav"))]
        np.testing.assert_array_equal(np.concatenate([enroll, s.held_out]), np.concatenate(recorded))


def test_load_speakers_says_what_is_missing(tmp_path):
    with pytest.raises(BenchError, match="speaker mode needs recordings per speaker"):
        load_speakers(tmp_path / "absent", 4.0)


# ------------------------------------------------------------------ statistics


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
    # On the bounds still holds: p99 equal to the bound, 98 % of the frame rate.
    assert judge(10, 98.0, 100.0, 0, 0, 0, 0, c) == []
    assert judge(10, 90.0, 150.0, 1, 2, 3, 4, c) == [
        "3 streams could not connect",
        "p99 150.0 ms > 100 ms",
        "90 frames/s < 98% of 100",
        "4 streams behind real time (> 1.0% frames late)",
        "1 error replies, 2 frames unanswered",
    ]
    assert judge(10, 100.0, None, 0, 0, 0, 0, c) == ["no replies"]


def answered_stream(account: str, n_frames: int, e2e_ms: float, worker: int) -> StreamRecord:
    """A stream whose every frame was sent on time and answered e2e_ms later by worker."""
    rec = StreamRecord.planned(account, t0=0.0, offset=0.0, n_frames=n_frames)
    rec.sent[:] = rec.due
    rec.replied[:] = rec.due + e2e_ms / 1000
    rec.model_ms[:] = 2.0
    rec.workers[worker] = n_frames
    return rec


def test_summarize_reports_the_window_and_the_usage():
    plan = LevelPlan(n=2, seconds=1.0, warmup=0.0)
    records = [answered_stream("a", 10, 5.0, 7001), answered_stream("b", 10, 15.0, 7002)]
    records[1].workers = Counter({7001: 4, 7002: 6})
    usage = ({"balancer": {"cpu_pct": 10.0}, "w7001": {"cpu_pct": 30.0}, "client": {"cpu_pct": 50.0}},
             {"busy_pct": 60.0, "process_cpu_pct": 100.0, "irq_cpu_pct": 1.0})
    level = summarize(plan, records, [], 0.0, 1.0, usage, Criteria())
    assert (level["frames"], level["frames_per_s"], level["target_frames_per_s"]) == (20, 20.0, 20)
    # Nearest rank over ten 5 ms and ten 15 ms latencies.
    assert (level["e2e_ms"]["p50"], level["e2e_ms"]["p95"], level["e2e_ms"]["max"]) == (5.0, 15.0, 15.0)
    assert level["frames_per_worker"] == {"7001": 14, "7002": 6}
    assert level["busiest_worker_share"] == 0.7
    assert level["other_cpu_pct"] == 10.0  # 100 % busy less the 90 % measured
    assert level["system_cpu_ms_per_frame"] == 20.0  # 40 % of a core over 20 frames/s
    assert level["held"] and level["reasons"] == [] and level["errors"] == 0

    refused = summarize(plan, records[:1], [ConnectionRefusedError("nope")], 0.0, 1.0, None, Criteria())
    assert refused["connect_failures"] == 1 and refused["errors"] == 1
    assert refused["error_messages"] == {"connect failed: ConnectionRefusedError: nope": 1}
    assert not refused["held"] and "1 streams could not connect" in refused["reasons"]
    assert refused["processes"] == {} and refused["other_cpu_pct"] is None


# ------------------------------------------------------------------ search


def test_next_n_multiplies_or_adds():
    assert next_n(10, 1.5, 0) == 15
    assert next_n(1, 1.2, 0) == 2  # always grows
    assert next_n(10, 1.5, 25) == 35


def test_find_max_bisects_between_last_held_and_first_failed():
    ran = []

    def run(n: int) -> dict:
        ran.append(n)
        return {"n": n, "held": n <= 37}
    held, levels = find_max(run, start=10, factor=2, add=0, max_n=1000, refine=10)
    assert held == 37
    # Doubling until 40 fails, then bisection between 20 and 40 until 37 | 38.
    assert ran == [10, 20, 40, 30, 35, 37, 38]
    assert [lv["n"] for lv in levels] == ran


def test_find_max_reports_none_when_the_first_level_fails():
    held, levels = find_max(lambda n: {"n": n, "held": False}, 10, 1.5, 0, 1000, refine=0)
    assert held is None and len(levels) == 1


# ------------------------------------------------------------------ report


def table_rows(table: str) -> list[list[str]]:
    """The level table's rows below its header, as cells (cells hold no
    spaces; header names may)."""
    header, *rows = table.split("\n\n")[0].splitlines()
    assert header.split()[:3] == ["N", "frames/s", "target"]
    cells = [row.split() for row in rows]
    assert all(len(c) == len(TABLE_HEAD) for c in cells), rows
    return cells


def test_format_table_has_one_row_per_level_in_order_of_n_and_the_process_table():
    usage = ({"balancer": {"cpu_pct": 12.0, "rss_peak_mb": 150.2, "hwm_mb": 160.0}},
             {"busy_pct": 50.0, "process_cpu_pct": 12.0, "irq_cpu_pct": 0.0})
    big = summarize(LevelPlan(n=3, seconds=1.0, warmup=0.0), [answered_stream("a", 10, 5.0, 7001)], [],
                    0.0, 1.0, None, Criteria())
    small = summarize(LevelPlan(n=2, seconds=1.0, warmup=0.0),
                      [answered_stream("a", 10, 5.0, 7001), answered_stream("b", 10, 5.0, 7001)], [],
                      0.0, 1.0, usage, Criteria())
    for level in (big, small):
        level["cpu_probe_ms"] = [3.0, 3.5]
    small["cpu_over_floor"] = 24.0  # 6 ms a frame against a floor of 0.25 ms (levels.py sets it)
    table = format_table([big, small])
    #        N    frames/s target e2e p50 p95  p99    max  model p50/p99  lag p99 errors lost late behind
    assert table_rows(table) == [
        ["2", "20.0", "20", "5.0", "5.0", "5.0", "5.0", "2.00", "2.00", "0.0", "0", "0", "0", "0",
         "100%", "6.00", "24.00", "50.0", "0", "3.0/3.5", "yes"],  # busiest, CPU ms/frame, x floor, machine,
        ["3", "10.0", "30", "5.0", "5.0", "5.0", "5.0", "2.00", "2.00", "0.0", "0", "0", "0", "0",  # other,
         "100%", "-", "-", "-", "-", "3.0/3.5", "NO"],  # probe, held; 10 frames/s of 30: nothing measured
    ]
    title, process_table = table.split("\n\n")[1].split("\n", 1)
    assert title == PROCESS_TABLE_TITLE
    assert [line.split() for line in process_table.splitlines()] == [
        ["N", "balancer"], ["2", "12%", "150", "[160]"], ["3", "-"]]


# ------------------------------------------------------------------ command line


def test_parse_args_defaults_and_derived_values():
    config = parse_args([])
    assert (config.mode, config.streams, config.seconds, config.n_workers) == ("vad", (10, 50, 100), 20.0, 3)
    assert config.json_path == RESULTS_DIR / "bench-vad.json" and config.plot_path == RESULTS_DIR / "bench-vad.png"
    found = parse_args(["--find-max", "--mode", "speaker", "--worker-ports", "7101,7102", "--p99-bound-ms", "50"])
    assert found.seconds == 10.0 and found.n_workers == 2 and found.worker_ports == (7101, 7102)
    assert found.json_path == RESULTS_DIR / "bench-speaker-findmax.json"
    assert found.criteria == Criteria(p99_bound_ms=50.0, late_tolerance=0.01)
    assert parse_args(["--json-out", "x.json"]).json_path == Path("x.json")


@pytest.mark.parametrize("argv, message", [
    (["--pids", "1"], "--pids goes with --url"),
    (["--url", "http://h:1", "--nice", "-5"], "--nice applies only"),
    (["--seconds", "0"], "--seconds must be positive"),
    (["--step-factor", "1"], "--step-factor must be > 1"),
    (["--streams", "10,x"], "expected comma-separated integers"),
    (["--streams", "0"], "expected positive integers"),
])
def test_parse_args_refuses_what_cannot_run(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_target_from_url_accepts_http_and_ws_forms():
    assert Target.from_url("http://h:6001/") == Target("http://h:6001", "ws://h:6001/ws")
    assert Target.from_url("wss://h:6001/ws", "t") == Target("https://h:6001", "wss://h:6001/ws", "t")
    with pytest.raises(BenchError, match="--url must start"):
        Target.from_url("h:6001")


def test_parse_pids_refuses_garbage_and_absent_processes():
    with pytest.raises(BenchError, match="NAME=PID"):
        parse_pids("balancer=abc")
    with pytest.raises(BenchError, match="no process 999999999"):
        parse_pids("w1=999999999")


def test_port_free_sees_a_listening_socket():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free(port)
    assert port_free(port)


def run_bench_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voicetools.bench", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_the_command_runs_from_the_repo_and_fails_fast_on_missing_audio(tmp_path):
    helped = run_bench_command("--help")
    assert helped.returncode == 0, helped.stderr
    assert "--find-max" in helped.stdout and "Measured per level" in helped.stdout
    # The recordings are read before any process starts.
    absent = tmp_path / "none"
    missing = run_bench_command("--mode", "speaker", "--speakers-dir", str(absent))
    assert missing.returncode == 2
    assert missing.stderr.strip() == (f"voicestream-bench: speaker mode needs recordings per speaker in {absent} "
                                      "(absent)")


# ------------------------------------------------------------------ a real level


@pytest.mark.integration
def test_a_short_real_level_gets_every_frame_answered(system, speech: Callable[[str], Path]):
    sources = load_speech_sources([speech("sample1.wav"), speech("en_example.wav")])
    plan = LevelPlan(n=3, seconds=1.0, warmup=0.2)
    level = asyncio.run(run_level(plan, Target(system.url, system.ws_url), sources, None, Criteria()))
    assert level["errors"] == 0, level["error_messages"]
    assert level["frames"] == 3 * round(1.0 / FRAME_SECONDS)
    assert level["e2e_ms"]["p50"] is not None and level["model_ms"]["p50"] is not None
    assert sum(level["frames_per_worker"].values()) >= level["frames"]
    assert set(level["frames_per_worker"]) <= {str(port) for port in system.worker_ports}
    level["cpu_probe_ms"] = [1.0, 1.0]
    [row] = table_rows(format_table([level]))
    n, fps, target, e2e_p50, _, e2e_p99, *_ = row
    assert (n, fps, target) == ("3", f"{level['frames_per_s']:.1f}", "30")
    assert (e2e_p50, e2e_p99) == (f"{level['e2e_ms']['p50']:.1f}", f"{level['e2e_ms']['p99']:.1f}")
    assert row[TABLE_HEAD.index("errors")] == "0" and row[-1] == ("yes" if level["held"] else "NO")


# ------------------------------------------------------------------ --database: pure parts


def test_parse_args_database_modes_and_their_result_files(monkeypatch):
    assert (parse_args([]).database, parse_args([]).uses_postgresql) == ("embedded", False)
    compare = parse_args(["--database", "compare", "--mode", "speaker", "--repeat", "3"])
    assert compare.uses_postgresql and compare.database_url == "" and compare.repeat == 3
    assert compare.json_path == RESULTS_DIR / "bench-speaker-compare.json"
    assert compare.plot_path == RESULTS_DIR / "bench-speaker-compare.png"
    given = parse_args(["--database", "postgresql", "--database-url", "postgresql://u@db:5433/v"])
    assert (given.database, given.database_url) == ("postgresql", "postgresql://u@db:5433/v")
    monkeypatch.setenv("BENCH_DATABASE", "compare")
    assert parse_args([]).database == "compare"


@pytest.mark.parametrize("argv, message", [
    (["--database", "postgresql", "--url", "http://h:1"], "--database applies to a system the benchmark starts"),
    (["--database-url", "postgresql://h/x"], "--database-url goes with --database postgresql or compare"),
    (["--database", "compare", "--find-max"], "does not combine with --find-max"),
    (["--database", "sqlite"], "invalid choice: 'sqlite'"),
    (["--repeat", "2"], "--repeat must be >= 1 and goes with --database compare"),
    (["--database", "compare", "--repeat", "0"], "--repeat must be >= 1"),
])
def test_parse_args_refuses_database_flags_that_cannot_run(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_bench_database_from_the_environment_is_checked_too(monkeypatch, capsys):
    monkeypatch.setenv("BENCH_DATABASE", "sqlite")
    with pytest.raises(SystemExit):
        parse_args([])
    assert "--database must be one of embedded, postgresql, compare, got 'sqlite'" in capsys.readouterr().err


def test_side_order_alternates_which_store_runs_first():
    orders = [side_order(i) for i in range(4)]
    assert [first for first, _ in orders] == ["embedded", "postgresql", "embedded", "postgresql"]
    assert all(sorted(order) == ["embedded", "postgresql"] for order in orders)


def test_summarize_keeps_the_database_server_apart_from_the_served_system():
    plan = LevelPlan(n=2, seconds=1.0, warmup=0.0)
    records = [answered_stream("a", 10, 5.0, 7001), answered_stream("b", 10, 15.0, 7002)]
    usage = ({"balancer": {"cpu_pct": 10.0}, "w7001": {"cpu_pct": 30.0}, "client": {"cpu_pct": 50.0},
              DATABASE_SERVER: {"cpu_pct": 4.0, "processes": 7}},
             {"busy_pct": 60.0, "process_cpu_pct": 100.0, "irq_cpu_pct": 1.0})
    level = summarize(plan, records, [], 0.0, 1.0, usage, Criteria())
    assert level["system_cpu_ms_per_frame"] == 20.0  # balancer + workers: 40 % of a core over 20 frames/s
    assert level["database_cpu_ms_per_frame"] == 2.0  # the server's 4 % over the same frames
    assert level["other_cpu_pct"] == 6.0  # the database server is ours, not other load
    without = summarize(plan, records, [], 0.0, 1.0, ({"balancer": {"cpu_pct": 10.0}}, usage[1]), Criteria())
    assert without["database_cpu_ms_per_frame"] is None


def test_answered_frames_counts_the_whole_level_without_errors_or_lost_frames():
    rec = answered_stream("a", 10, 5.0, 7001)
    rec.replied[9] = np.nan  # never answered
    rec.failed[8] = True  # an error reply: no result, no row
    # The window holds only the first half; every answered frame of the level is a row all the same.
    assert window_stats([rec], 0.0, 0.5, 0.01).frames == 5
    assert answered_frames([rec, answered_stream("b", 3, 5.0, 7002)]) == 8 + 3
    level = summarize(LevelPlan(n=1, seconds=0.5, warmup=0.0), [rec], [], 0.0, 0.5, None, Criteria())
    assert (level["answered"], level["sent"]) == (8, 10)
    unsent = answered_stream("c", 5, 5.0, 7001)
    unsent.sent[3:] = unsent.replied[3:] = np.nan  # the level ended before its last two were due
    assert sent_frames([unsent]) == answered_frames([unsent]) == 3


def level_of(n: int, cpu: float | None, database_cpu: float | None, p99: float, rows: dict | None = None) -> dict:
    level = {"n": n, "system_cpu_ms_per_frame": cpu, "database_cpu_ms_per_frame": database_cpu,
             "e2e_ms": {"p99": p99}, "held": True}
    return level | ({"frame_rows": rows} if rows is not None else {})


def test_compare_levels_and_the_comparison_table_from_given_figures():
    within = compare_levels([level_of(50, 2.0, 0.01, 30.0)],
                            [level_of(50, 2.1, 0.3, 35.5, {"rows": 12000, "answered": 12000, "spooled": 0})])
    assert within == {
        "n": 50, "first": "embedded", "runs": 1, "embedded_cpu_ms_per_frame": 2.0, "postgresql_cpu_ms_per_frame": 2.1,
        "database_server_cpu_ms_per_frame": 0.3, "cpu_ratio": 1.05, "cpu_ratio_with_server": 1.2,
        "pair_ratios": [1.05], "within_goal": True, "embedded_e2e_p99_ms": 30.0, "postgresql_e2e_p99_ms": 35.5,
        "rows": 12000, "answered": 12000, "rows_error": None, "held": True}
    # Three pairs: the medians decide (2.0 and 2.5), each pair's own ratio is kept.
    missed = compare_levels(
        [level_of(100, 2.0, None, 40.0), level_of(100, 1.8, None, 45.0), level_of(100, 2.2, None, 38.0)],
        [level_of(100, 2.5, None, 61.0, {"rows": 24000, "answered": 24000}),
         level_of(100, 2.0, None, 50.0, {"rows": 23999, "answered": 24000, "error": "short by one"}),
         level_of(100, 2.6, None, 70.0, {"rows": 24000, "answered": 24000})],
        first="postgresql")
    assert (missed["runs"], missed["embedded_cpu_ms_per_frame"], missed["postgresql_cpu_ms_per_frame"]) == (3, 2.0, 2.5)
    assert (missed["cpu_ratio"], missed["cpu_ratio_with_server"], missed["within_goal"]) == (1.25, None, False)
    assert missed["pair_ratios"] == [1.25, 1.111, 1.182]
    assert (missed["embedded_e2e_p99_ms"], missed["postgresql_e2e_p99_ms"]) == (40.0, 61.0)
    assert (missed["rows"], missed["answered"], missed["rows_error"]) == (71999, 72000, "short by one")
    unmeasured = compare_levels([level_of(200, None, None, 50.0)], [level_of(200, 2.0, None, 50.0)])
    assert (unmeasured["cpu_ratio"], unmeasured["within_goal"], unmeasured["rows"]) == (None, None, None)

    header, *rows = format_comparison([unmeasured, missed, within]).splitlines()
    assert header.split() == " ".join(COMPARISON_HEAD).split()
    assert [row.split() for row in rows] == [
        ["50", "1", "embedded", "2.000", "2.100", "0.300", "1.050", "1.200", "30.0", "35.5", "12000/12000", "1.050"],
        ["100", "3", "postgresql", "2.000", "2.500", "-", "1.250", "-", "40.0", "61.0", "71999/72000", "MISMATCH",
         "1.250,1.111,1.182"],
        ["200", "1", "embedded", "-", "2.000", "-", "-", "-", "50.0", "50.0", "-", "-"],
    ]


def test_tree_cpu_counts_a_child_that_already_exited():
    me = psutil.Process()
    user, system, _ = tree_cpu_seconds(me)
    burn_then_wait = "import sys\nsum(i * i for i in range(3_000_000))\nsys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", burn_then_wait], stdin=subprocess.PIPE)
    try:
        # Its CPU while it lives, then the same CPU in our children_* once it exited and was reaped.
        wait_until(lambda: sum(psutil.Process(child.pid).cpu_times()[:2]) > 0.05, 60, "the child to burn CPU")
        spent = sum(psutil.Process(child.pid).cpu_times()[:2])
    finally:
        child.communicate(b"", timeout=60)
    after_user, after_system, _ = tree_cpu_seconds(me)
    assert round(after_user + after_system - user - system, 2) >= round(spent, 2)  # in 10 ms ticks


def test_the_row_check_reports_an_unreachable_database_as_the_levels_error():
    database = BenchDatabase(f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    level = {"answered": 30, "sent": 30, "reasons": [], "held": True}
    check_rows(database, level, 0, [])
    assert level["frame_rows"]["rows"] is None and level["frame_rows"]["spooled"] == 0
    assert level["frame_rows"]["error"].startswith("cannot count the frames in postgresql://")
    assert not level["held"] and level["reasons"] == [level["frame_rows"]["error"]]
    with pytest.raises(BenchError, match="cannot count the frames"):
        BenchDatabase.open(database.url)


def test_listening_pid_looks_only_on_this_machine():
    assert listening_pid("postgresql://postgres@db.example:5432/x") is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert listening_pid(f"postgresql://postgres@127.0.0.1:{s.getsockname()[1]}/x") == psutil.Process().pid


# ------------------------------------------------------------------ --database: a real PostgreSQL


def test_postmaster_processes_include_a_backend_and_its_cpu_after_it_ended(pg_server: PostgresServer):
    postmaster = psutil.Process(postmaster_pid(pg_server.data_dir))
    assert listening_pid(pg_server.url) == postmaster.pid
    watch = ProcessWatch({}, {DATABASE_SERVER: postmaster})
    watch.begin()
    before = tree_cpu_seconds(postmaster)
    with psycopg.connect(pg_server.url) as conn:
        backend_row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert backend_row is not None
        backend = psutil.Process(backend_row[0])
        assert backend in postmaster.children(recursive=True)
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)")
        spent = sum(backend.cpu_times()[:2])
    wait_until(lambda: backend not in postmaster.children(recursive=True), 30, "the backend to end")
    after = tree_cpu_seconds(postmaster)
    # CPU times come in clock ticks (10 ms) as floats: compare them in ticks,
    # not as sums whose last bits differ (0.24 - 0.03 < 0.21000000000000002).
    assert round(sum(after[:2]) - sum(before[:2]), 2) >= round(spent, 2) > 0
    usage, _ = watch.end()
    entry = usage[DATABASE_SERVER]
    assert entry["pid"] == postmaster.pid and entry["cpu_pct"] > 0 and entry["processes"] == after[2]
    assert "rss_peak_mb" not in entry


def test_the_row_check_counts_the_rows_a_level_added(pg_url: str):
    database = BenchDatabase(pg_url)
    assert database.count_frames() == 0  # no frames table yet: no worker has run
    assert database.check_rows(0, 2, 2, [])["error"] == "the database holds 0 rows for 2 frames answered"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE frames (seq bigint)")
        conn.execute("INSERT INTO frames SELECT generate_series(1, 5)")
    assert database.check_rows(3, 2, 2, []) == {"answered": 2, "spooled": 0, "rows": 2}
    # One row too many: a frame recorded twice, or one that was never sent.
    assert database.check_rows(2, 2, 2, [])["error"] == "the database holds 3 rows for 2 frames answered"
    # A frame the benchmark stopped waiting for may have been recorded (the level failed for it already).
    assert database.check_rows(2, 2, 4, []) == {"answered": 2, "spooled": 0, "rows": 3, "unanswered_rows": 1}
    assert database.check_rows(0, 2, 4, [])["error"] == "the database holds 5 rows for 2 frames answered (4 sent)"


@pytest.mark.integration
def test_a_short_compare_level_answers_every_frame_on_both_stores_and_records_each_once(tmp_path, speech):
    speech("sample1.wav")
    config = parse_args(["--mode", "vad", "--database", "compare", "--n-workers", "2", "--streams", "3",
                         "--seconds", "2", "--warmup", "0.5", "--quiet-timeout", "0", "--noisy-retries", "0",
                         "--json-out", str(tmp_path / "compare.json")])
    try:
        result = run_bench(config)
    except BenchError as exc:
        if isinstance(exc.__cause__, PostgresUnavailable):
            pytest.skip(str(exc))
        raise
    sent = 3 * math.ceil((config.warmup + config.seconds + TAIL_SECONDS) / FRAME_SECONDS)
    embedded, postgresql = sorted(result["levels"], key=lambda lv: lv["database"])
    assert (embedded["database"], postgresql["database"]) == ("embedded", "postgresql")
    for level in (embedded, postgresql):
        assert (level["errors"], level["answered"]) == (0, sent), level["error_messages"]
    assert postgresql["frame_rows"] == {"answered": sent, "spooled": 0, "rows": sent}
    assert (embedded["sent"], postgresql["sent"]) == (sent, sent)
    assert "frame_rows" not in embedded
    # The server is measured on both sides (idle while the embedded system runs).
    assert postgresql["processes"][DATABASE_SERVER]["processes"] > embedded["processes"][DATABASE_SERVER]["processes"]
    [row] = result["comparison"]
    assert (row["n"], row["runs"], row["first"], row["rows"], row["answered"]) == (3, 1, "embedded", sent, sent)
    assert row["rows_error"] is None
    assert row["embedded_e2e_p99_ms"] == embedded["e2e_ms"]["p99"]
    assert row["postgresql_cpu_ms_per_frame"] == postgresql["system_cpu_ms_per_frame"]
