"""Never "ok" without a record, in process: appends on a real full tmpfs,
the disk guard, one account's unwritable log inside a batch, a --log-dir
that is a file, a spool that cannot be written, and the resend of a frame
that was processed but not recorded (real WAV frames, the real Flask app).
test_record_system.py does the same through real processes."""
from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from frame_logs import logged
from test_metrics import post_frames, speech, value, worker_config, worker_scrape
from tmpfs import fill, free_bytes, tmpfs
from voicestream.batch import FrameMeta, encode_batch
from voicestream.events import Segment
from voicestream.logline import format_line, parse_line
from voicestream.segments import parse_segment
from voicestream.stamps import stamp_text
from voicetools.cluster import free_port, wait_until
from worker.app import create_app
from worker.context import EXTENSION, Worker
from worker.storage.appends import RecordWriteError
from worker.storage.framelog import FrameLog
from worker.storage.guard import CHECK_SECONDS, DISK_FULL, FAULT_SECONDS, MB, DiskGuard, Watched
from worker.storage.segments import SegmentLog

STAMP = 1_674_222_284_123_435  # 2023-01-20 13:44:44.123435
WHEN = datetime(2023, 1, 20, 13, 44, 44, 123435)
ACCOUNTS = ["X1", "X2", "X3", "X4", "X5", "X6"]


def whole_lines(path: Path) -> list[str]:
    """The file's lines, failing on a partial one (no newline, or not the format)."""
    text = path.read_text() if path.exists() else ""
    assert text == "" or text.endswith("\n"), f"partial line left: {text[-80:]!r}"
    lines = text.splitlines()
    assert all(parse_line(line) is not None for line in lines), [line for line in lines if parse_line(line) is None]
    return lines


# --- appends on a real full file system --------------------------------------

def test_appends_to_a_full_tmpfs_never_report_success_without_a_whole_line(tmp_path: Path):
    """The issue's case: 400 appends on an 8 KB tmpfs used to return True 400
    times and leave 178 lines. Now each success is a whole line, each failure
    names the cause, and no fragment is left - although the disk runs out in
    the middle of lines (a page boundary), a short write."""
    with tmpfs(tmp_path / "disk", "8k") as disk:
        log = FrameLog(disk)
        written, errors = 0, []
        for i in range(400):
            try:
                written += log.append("acct", format_line(WHEN + timedelta(microseconds=i), 1, 7001, 3))
            except RecordWriteError as exc:
                errors.append(str(exc))
        lines = whole_lines(disk / "acct.txt")
        assert written == len(lines) and 0 < written < 400
        assert len(errors) == 400 - written
        assert set(errors) == {"frame log acct.txt cannot be written: no space left on device"}
        # Byte for byte the lines that succeeded, in order: nothing glued, nothing lost.
        assert lines == [format_line(WHEN + timedelta(microseconds=i), 1, 7001, 3).rstrip("\n")
                         for i in range(written)]


def test_segments_on_a_full_tmpfs_are_written_whole_or_not_at_all(tmp_path: Path):
    segment: Segment = {"type": "segment", "speaker": "alice", "score": 0.71, "start": "2023-01-20 13:44:44.123435",
                        "end": "2023-01-20 13:44:45.123435", "start_seq": 1, "end_seq": 10, "frames": 10,
                        "final": True}
    with tmpfs(tmp_path / "disk", "8k") as disk:
        segments = SegmentLog(disk)
        fill(disk, leave=4096)  # one page left: the second or third batch of three lines runs out mid-way
        written, errors = 0, set()
        for _ in range(40):
            try:
                segments.append("acct", [("s1", segment)] * 3)
                written += 3
            except RecordWriteError as exc:
                errors.add(str(exc))
        text = (disk / "acct.segments.txt").read_text()
    assert text.endswith("\n") and all(parse_segment(line) is not None for line in text.splitlines(keepends=True))
    assert len(text.splitlines()) == written > 0
    assert errors == {"segments file acct.segments.txt cannot be written: no space left on device"}


# --- the guard -----------------------------------------------------------------

class Clock:
    """The one thing faked: time, so that "not before a second" is exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def guard_of(directory: Path, min_free_bytes: int, clock: Clock) -> DiskGuard:
    return DiskGuard([Watched("the frame logs", "--log-dir", directory)], min_free_bytes, clock)


def test_the_guard_looks_at_the_disk_at_most_once_a_second_and_stops_under_min_free(tmp_path: Path):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        clock = Clock()
        guard = guard_of(disk, 1 * MB, clock)
        assert guard.fault() is None
        free = guard.free_bytes
        assert free == free_bytes(disk)
        filler = fill(disk, leave=512 * 1024)  # now under --min-free-mb 1
        clock.now += CHECK_SECONDS / 2
        assert guard.fault() is None and guard.free_bytes == free  # not looked at again yet
        clock.now += CHECK_SECONDS / 2
        fault = guard.fault()
        assert fault is not None and fault.reason == DISK_FULL and fault.worker_wide
        assert fault.message == "0.5 MB free where the frame logs are, under --min-free-mb 1"
        filler.unlink()
        clock.now += CHECK_SECONDS
        assert guard.fault() is None  # space is back: it recovers by itself


def test_a_write_that_found_the_disk_full_stops_writes_until_space_is_back(tmp_path: Path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        clock = Clock()
        guard = guard_of(disk, 0, clock)  # --min-free-mb 0: only the failed write tells
        filler = fill(disk)
        with pytest.raises(RecordWriteError) as raised:
            FrameLog(disk).append("acct", format_line(WHEN, 1, 7001, 3))
        fault = guard.failed(raised.value)
        assert (fault.reason, fault.worker_wide) == (DISK_FULL, True)
        assert fault.message == "--log-dir cannot be written: no space left on device"
        clock.now += CHECK_SECONDS
        assert guard.fault() == fault  # still full: held
        filler.unlink()
        clock.now += CHECK_SECONDS
        assert guard.fault() is None
        # Space that never comes back (a quota, say): writes are tried again after a while.
        fill(disk)
        guard.failed(raised.value)
        clock.now += FAULT_SECONDS
        assert guard.fault() is None


# --- the worker app ------------------------------------------------------------

def frames_of_accounts(accounts: list[str], rounds: int, first_seq: int = 1) -> list[tuple[FrameMeta, bytes]]:
    """One frame of each account per round, as the balancer batches them."""
    audio = speech("us_female_16k.wav", seconds=rounds / 10)
    return [(FrameMeta(account, f"stream-{account}", first_seq + r, STAMP + 1000 * r + a), audio[r])
            for r in range(rounds) for a, account in enumerate(accounts)]


def log_dir(app: Flask) -> Path:
    worker: Worker = app.extensions[EXTENSION]
    return Path(worker.config.log_dir)


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(worker_config(tmp_path))


@pytest.fixture
def client(app: Flask):
    with app.test_client() as client:
        yield client


def test_one_accounts_unwritable_log_fails_only_its_own_frames(app: Flask, client: FlaskClient):
    """The issue's case: a directory named X5.txt used to make the whole
    batch Flask's 500, losing the five other accounts' frames."""
    (log_dir(app) / "X5.txt").mkdir()
    frames = frames_of_accounts(ACCOUNTS, rounds=10)
    answered = post_frames(client, frames)
    for (meta, _), (status, reply) in zip(frames, answered, strict=True):
        if meta.account == "X5":
            assert (status, reply) == (500, {"error": "frame log X5.txt cannot be written: is a directory"})
        else:
            assert status == 200 and "error" not in reply and reply["voice"] in (0, 1), reply
    for account in ACCOUNTS:
        if account != "X5":
            assert len(whole_lines(log_dir(app) / f"{account}.txt")) == 10
    health = client.get("/health")
    assert health.status_code == 200 and health.get_json()["status"] == "ok"  # one account's fault is not the worker's
    samples = worker_scrape(client)
    assert value(samples, "voicestream_worker_frames_unrecorded_total", reason="log_unwritable") == 10
    assert value(samples, "voicestream_worker_frames_total", outcome="unrecorded") == 10
    assert value(samples, "voicestream_worker_frames_total", outcome="ok") == 50
    assert value(samples, "voicestream_worker_degraded") == 0


def test_a_frame_processed_but_not_recorded_is_recorded_by_its_resend_not_processed_again(app: Flask,
                                                                                          client: FlaskClient):
    """Its VAD state moved past the frame: the resend writes the line it
    was processed into (its stamp, its voice), runs no model, and a further
    resend is a duplicate."""
    (log_dir(app) / "X5.txt").mkdir()
    frames = frames_of_accounts(["X5"], rounds=6)
    first = post_frames(client, frames)
    assert [status for status, _ in first] == [500] * 6
    model_calls = value(worker_scrape(client), "voicestream_worker_vad_seconds_count")
    (log_dir(app) / "X5.txt").rmdir()
    resent = post_frames(client, frames)
    assert [status for status, _ in resent] == [200] * 6
    assert value(worker_scrape(client), "voicestream_worker_vad_seconds_count") == model_calls
    lines = [logged(line) for line in whole_lines(log_dir(app) / "X5.txt")]
    assert [line.time for line in lines] == [stamp_text(meta.stamp) for meta, _ in frames if meta.stamp]
    assert [line.voice for line in lines] == [reply["voice"] for _, reply in resent]
    assert not any(reply.get("duplicate") for _, reply in resent)
    again = post_frames(client, frames)
    assert [(status, reply.get("duplicate")) for status, reply in again] == [(200, True)] * 6
    assert len(whole_lines(log_dir(app) / "X5.txt")) == 6


def test_a_held_frame_resent_through_another_balancer_is_answered_with_its_lines_time(app: Flask,
                                                                                       client: FlaskClient):
    """Another balancer stamps the resend anew: the line keeps the stamp the
    frame was processed under, and so does every answer to it (the balancer
    adds its own time only to a reply without one)."""
    (log_dir(app) / "X5.txt").mkdir()
    frames = frames_of_accounts(["X5"], rounds=4)
    assert [status for status, _ in post_frames(client, frames)] == [500] * 4
    (log_dir(app) / "X5.txt").rmdir()
    restamped = [(FrameMeta(meta.account, meta.stream, meta.seq, (meta.stamp or 0) + 7_000_000), wav)
                 for meta, wav in frames]
    first_times = [stamp_text(meta.stamp) for meta, _ in frames if meta.stamp]
    resent = post_frames(client, restamped)
    assert [status for status, _ in resent] == [200] * 4
    assert [reply["time"] for _, reply in resent] == first_times
    assert [logged(line).time for line in whole_lines(log_dir(app) / "X5.txt")] == first_times
    again = post_frames(client, restamped)
    assert [(reply["time"], reply.get("duplicate")) for _, reply in again] == [(t, True) for t in first_times]


def test_a_log_dir_that_is_a_file_refuses_every_frame_and_health_says_degraded(tmp_path: Path):
    logs = tmp_path / "logs"
    logs.write_text("not a directory\n")
    app = create_app(worker_config(tmp_path))  # the worker starts: the directory may be fixed while it runs
    frames = frames_of_accounts(ACCOUNTS, rounds=2)
    with app.test_client() as client:
        refused = post_frames(client, frames, status=503)
        assert refused == []
        response = client.post("/frames/batch", data=b"", content_type="application/x-voice-frames")
        assert response.status_code == 400  # a malformed batch is still that
        batch = client.post("/frames/batch", data=encode_batch(frames), content_type="application/x-voice-frames")
        assert batch.status_code == 503
        assert batch.get_json() == {"error": "this worker cannot record frames now: --log-dir is not a directory: "
                                             "send the frames to another worker"}
        health = client.get("/health")
        assert health.status_code == 503
        body = health.get_json()
        assert (body["status"], body["reason"], body["error"], body["log_dir"]) == \
            ("degraded", "log_unwritable", "--log-dir is not a directory", str(logs))
        samples = worker_scrape(client)
        assert value(samples, "voicestream_worker_degraded") == 1
        assert value(samples, "voicestream_worker_batches_rejected_total", reason="degraded") == 2
        assert value(samples, "voicestream_worker_frames_unrecorded_total", reason="log_unwritable") == 24
        assert logs.read_text() == "not a directory\n"
        logs.unlink()  # fixed: the worker makes the directory and records again
        wait_until(lambda: client.get("/health").status_code == 200, 10 * CHECK_SECONDS, "the worker to recover")
        answered = post_frames(client, frames)
        assert all(status == 200 for status, _ in answered)
    assert all(len(whole_lines(logs / f"{account}.txt")) == 2 for account in ACCOUNTS)


def test_a_spool_that_cannot_be_written_answers_the_frames_with_the_reason(tmp_path: Path):
    """--database down and the spool's disk full: the rows are nowhere, so
    the frames are not ok; their lines are written, and a retry elsewhere
    stores the rows (the row's key makes it once)."""
    with tmpfs(tmp_path / "spool", "256k") as spool:
        url = f"postgresql://voicestream@127.0.0.1:{free_port()}/voicestream"
        app = create_app(worker_config(tmp_path, database=url, spool_dir=str(spool), database_timeout=0.5,
                                       min_free_mb=0))
        worker: Worker = app.extensions[EXTENSION]
        try:
            fill(spool)
            frames = frames_of_accounts(ACCOUNTS[:2], rounds=3)
            with app.test_client() as client:
                answered = post_frames(client, frames)
                assert {status for status, _ in answered} == {503}
                assert {reply["error"] for _, reply in answered} == {
                    "the database did not take the frame rows and the spool cannot be written: database or disk "
                    "is full"}
                health = client.get("/health")
                assert health.status_code == 503 and health.get_json()["reason"] == "disk_full"
                assert value(worker_scrape(client), "voicestream_worker_frames_unrecorded_total",
                             reason="disk_full") == 6
        finally:
            worker.storage.close()
    assert all(len(whole_lines(log_dir(app) / f"{account}.txt")) == 3 for account in ACCOUNTS[:2])


def test_the_log_dir_removed_while_the_worker_runs_is_made_again(app: Flask, client: FlaskClient):
    frames = frames_of_accounts(ACCOUNTS[:1], rounds=2)
    post_frames(client, frames[:1])
    shutil.rmtree(log_dir(app))
    answered = post_frames(client, frames[1:])
    assert [status for status, _ in answered] == [200]
    assert len(whole_lines(log_dir(app) / "X1.txt")) == 1
