"""voicetools.tail (voicestream-tail) as a user runs it (a real subprocess)
against a real PostgreSQL: an account's lines in the exact log format ordered by frame time,
--follow printing rows as they are committed (LISTEN/NOTIFY, a look-back for
late commits), --final with the final speaker labels (with --follow, each
frame once its label is final), --segments in the segments file's format,
and a clear exit 2 for a bad URL or an unreachable database.
(tests/test_segment_record.py runs --final and --segments on a real
conversation's record.)"""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

import psycopg
import pytest

from voicestream.events import SEGMENT, Segment
from voicestream.logline import format_line, parse_line
from voicestream.segments import format_segment, parse_segment
from voicestream.stamps import stamp_text, stamp_time
from voicetools.cluster import free_port
from voicetools.paths import REPO
from voicetools.tail import FINAL_WAIT_SECONDS
from worker.storage.postgres.connection import Database
from worker.storage.postgres.frames import FrameRows
from worker.storage.postgres.notify import FRAMES_CHANNEL
from worker.storage.postgres.spool import Spool
from worker.storage.rows import FinalLabel, FrameRow

pytest_plugins = ["pg"]  # pg_server, pg_url
pytestmark = pytest.mark.integration  # a PostgreSQL server process and the tail command

TAIL = [sys.executable, "-m", "voicetools.tail"]  # from the checkout (cwd=REPO), as a user runs it
T0 = 1_674_222_284_123_435  # 2023-01-20 13:44:44.123435


def line(row: FrameRow) -> str:
    """The line the worker writes to its file for this frame."""
    return format_line(stamp_time(row.stamp), row.voice, row.worker, row.ms, row.speaker, row.score)


def run_tail(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TAIL, *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def frame_rows(pg_url, tmp_path) -> Iterator[FrameRows]:
    with Database(pg_url, name="tail-test").open() as database:
        assert database.up
        spool = Spool(tmp_path / "spool.db", 1000)
        rows = FrameRows(database, spool, "host-a")
        yield rows
        rows.close()
        spool.close()


def test_prints_the_accounts_lines_ordered_by_frame_time(frame_rows, pg_url):
    # Two hosts' workers, two streams, batches out of stamp order, speakers.
    acme = [FrameRow("acme", "conn-1", 0, T0 + 300_000, 1, 7001, 4.2, "alice", 0.8123),
            FrameRow("acme", "conn-2", 0, T0 + 100_000, 0, 7002, 2.5),
            FrameRow("acme", "conn-1", 1, T0 + 200_000, 1, 7003, 13.51, "unknown", 0.125),
            FrameRow("acme", "conn-2", 1, T0 + 300_000, 1, 7001, 3.0, "bob", None)]
    frame_rows.record(acme[:2] + [FrameRow("other", "conn-3", 0, T0, 1, 7001, 3.0)])
    frame_rows.record(acme[2:])
    frame_rows.record(acme[1:3])  # a retry: nothing twice
    done = run_tail("acme", "--database", pg_url)
    assert done.returncode == 0, done.stderr
    expected = sorted(acme, key=lambda r: (r.stamp, r.stream, r.seq))
    assert done.stdout == "".join(line(r) for r in expected)
    assert all(parse_line(text) is not None for text in done.stdout.splitlines())


def test_the_url_may_come_from_the_environment(frame_rows, pg_url):
    frame_rows.record([FrameRow("acme", "conn-1", 0, T0, 1, 7001, 3.0)])
    done = run_tail("acme", env={"DATABASE_URL": pg_url})
    assert (done.returncode, done.stdout) == (0, line(FrameRow("acme", "conn-1", 0, T0, 1, 7001, 3.0)))
    assert run_tail("nobody", env={"DATABASE_URL": pg_url}).stdout == ""


def final(row: FrameRow, speaker: str | None = None, score: float | None = None) -> str:
    """The frame's line with a final label (or none) in place of its immediate one."""
    return format_line(stamp_time(row.stamp), row.voice, row.worker, row.ms, speaker, score)


def label(rows: list[FrameRow], speaker: str, score: float | None) -> FinalLabel:
    """The final label of consecutive rows of one stream."""
    return FinalLabel(rows[0].account, rows[0].stream, rows[0].seq, rows[-1].seq, speaker, score, len(rows),
                      rows[0].stamp, rows[-1].stamp)


def segment(final: FinalLabel) -> str:
    """The label's line in the segments file."""
    event: Segment = {"type": SEGMENT, "speaker": final.speaker, "score": final.score,
                      "start": stamp_text(final.start), "end": stamp_text(final.end), "start_seq": final.start_seq,
                      "end_seq": final.end_seq, "frames": final.frames, "final": True}
    return format_segment(event, final.stream)


def test_final_prints_the_final_labels_in_place_of_the_immediate_ones(frame_rows, pg_url):
    rows = [FrameRow("acme", "conn-1", seq, T0 + seq * 100_000, 1, 7001, 4.0, "alice", 0.6) for seq in range(6)]
    rows[3] = FrameRow("acme", "conn-1", 3, T0 + 300_000, 0, 7001, 4.0)  # unvoiced: in no segment
    frame_rows.record(rows[:4], [label(rows[:3], "bob", 0.714)])
    frame_rows.record(rows[4:])  # 4 and 5: no final label yet
    done = run_tail("acme", "--database", pg_url, "--final")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join([final(r, "bob", 0.71) for r in rows[:3]] + [final(r) for r in rows[3:]])
    assert all(parse_line(text) is not None for text in done.stdout.splitlines())


def test_segments_prints_the_segments_files_lines_ordered_by_end(frame_rows, pg_url):
    one = [FrameRow("acme", "conn-1", seq, T0 + seq * 100_000, 1, 7001, 4.0) for seq in range(6)]
    two = [FrameRow("acme", "conn-2", seq, T0 + 50_000 + seq * 100_000, 1, 7002, 4.0) for seq in range(6)]
    labels = [label(one[3:], "alice", 0.8), label(two[:2], "unknown", None), label(one[:3], "bob", 0.55)]
    frame_rows.record(one + two + [FrameRow("other", "conn-3", 0, T0, 1, 7001, 3.0)],
                      labels + [label([FrameRow("other", "conn-3", 0, T0, 1, 7001, 3.0)], "carol", 0.9)])
    done = run_tail("acme", "--database", pg_url, "--segments")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(segment(f) for f in sorted(labels, key=lambda f: f.end))
    assert all(parse_segment(text) is not None for text in done.stdout.splitlines())


class Follow:
    """voicestream-tail --follow as a subprocess; its lines arrive on a queue."""

    def __init__(self, account: str, url: str, *args: str) -> None:
        self.proc = subprocess.Popen([*TAIL, account, "--database", url, "--follow", *args], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: queue.Queue[str] = queue.Queue()
        self.readers = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                        for stream, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, into: queue.Queue[str]) -> None:
        assert stream is not None
        for text in stream:
            into.put(text)

    def expect(self, count: int, timeout: float = 30.0, stderr: bool = False) -> list[str]:
        source = self.errors if stderr else self.lines
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < count:
            try:
                got.append(source.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"the tail printed {got} of {count} lines") from None
        return got

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        for reader in self.readers:
            reader.join(30)  # to the pipes' end
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def test_follow_prints_rows_as_they_are_committed(frame_rows, pg_url):
    history = FrameRow("acme", "conn-1", 0, T0, 1, 7001, 3.0)
    frame_rows.record([history])
    tail = Follow("acme", pg_url)
    try:
        assert tail.expect(1) == [line(history)]
        for seq in range(1, 4):  # one batch at a time, as a stream's frames come
            row = FrameRow("acme", "conn-1", seq, T0 + seq * 100_000, seq % 2, 7002, 5.0, "alice", 0.9)
            frame_rows.record([row, FrameRow("other", "conn-9", seq, T0, 1, 7001, 3.0)])
            assert tail.expect(1) == [line(row)]
        # A late commit: a row whose id was taken before the rows committed
        # after it (a slow worker's insert). Printed when it commits, once.
        late = FrameRow("acme", "conn-2", 0, T0 + 50_000, 0, 7003, 7.0)
        with psycopg.connect(pg_url) as slow:
            slow.execute("INSERT INTO frames (account, stream, seq, stamp, voice, worker, ms, host) "
                         "VALUES (%s, %s, %s, %s, %s, %s, %s, 'host-b')",
                         (late.account, late.stream, late.seq, late.stamp, late.voice, late.worker, 7))
            for seq in (4, 5, 6):  # several queries pass while it is uncommitted
                after = FrameRow("acme", "conn-1", seq, T0 + seq * 100_000, 1, 7002, 5.0)
                frame_rows.record([after])
                assert tail.expect(1) == [line(after)]
            slow.execute("SELECT pg_notify(%s, %s)", (FRAMES_CHANNEL, "acme"))
        assert tail.expect(1) == [line(late)]
        # Nothing printed twice: the next row is the next line.
        last = FrameRow("acme", "conn-1", 7, T0 + 700_000, 1, 7002, 5.0)
        frame_rows.record([last, FrameRow("acme", "conn-1", 4, T0 + 400_000, 1, 7002, 5.0)])
        assert tail.expect(1) == [line(last)]
        assert tail.lines.empty()
    finally:
        tail.stop()


def test_follow_prints_a_row_uncommitted_while_it_read_the_history(frame_rows, pg_url):
    history = FrameRow("acme", "conn-1", 0, T0, 1, 7001, 3.0)
    late = FrameRow("acme", "conn-2", 0, T0 + 50_000, 0, 7003, 7.0)
    with psycopg.connect(pg_url) as slow:
        slow.execute("INSERT INTO frames (account, stream, seq, stamp, voice, worker, ms, host) "
                     "VALUES (%s, %s, %s, %s, %s, %s, %s, 'host-b')",
                     (late.account, late.stream, late.seq, late.stamp, late.voice, late.worker, 7))
        frame_rows.record([history])
        tail = Follow("acme", pg_url)
        try:
            assert tail.expect(1) == [line(history)]
            after = FrameRow("acme", "conn-1", 1, T0 + 100_000, 1, 7002, 5.0)
            frame_rows.record([after])
            assert tail.expect(1) == [line(after)]
            slow.execute("SELECT pg_notify(%s, %s)", (FRAMES_CHANNEL, "acme"))
            slow.commit()
            assert tail.expect(1) == [line(late)]
        finally:
            tail.stop()


def test_follow_outlives_a_database_restart(own_pg, tmp_path):
    with Database(own_pg.url, name="tail-test").open() as database:
        spool = Spool(tmp_path / "spool.db", 1000)
        frame_rows = FrameRows(database, spool, "host-a")
        try:
            first = FrameRow("acme", "conn-1", 0, T0, 1, 7001, 3.0)
            frame_rows.record([first])
            tail = Follow("acme", own_pg.url)
            try:
                assert tail.expect(1) == [line(first)]
                own_pg.server.stop("immediate")
                assert "lost the database" in tail.expect(1, stderr=True)[0]
                own_pg.server.start()
                assert tail.expect(1, stderr=True) == ["voicestream-tail: connected again\n"]
                second = FrameRow("acme", "conn-1", 1, T0 + 100_000, 0, 7001, 3.0)
                frame_rows.record([second])  # to the spool or the database: tail prints it either way
                assert tail.expect(1) == [line(second)]
            finally:
                tail.stop()
        finally:
            frame_rows.close()
            spool.close()


def test_follow_final_prints_each_frame_once_its_label_is_final(frame_rows, pg_url):
    def frame(seq: int, voice: int = 1, seconds: float = 0.0) -> FrameRow:
        return FrameRow("acme", "conn-1", seq, T0 + seq * 100_000 + round(seconds * 1e6), voice, 7001, 4.0,
                        "alice" if voice else None, 0.6 if voice else None)

    history = [frame(0, 0), frame(1), frame(2)]
    frame_rows.record(history, [label(history[1:2], "bob", 0.7)])
    tail = Follow("acme", pg_url, "--final")
    try:
        # Frame 2 waits for its label: nothing after it is printed before it.
        assert tail.expect(2) == [final(history[0]), final(history[1], "bob", 0.7)]
        later = [frame(3), frame(4, 0)]
        frame_rows.record(later)
        frame_rows.record([], [label([history[2], later[0]], "carol", 0.81)])  # their segment closes
        assert tail.expect(3) == [final(history[2], "carol", 0.81), final(later[0], "carol", 0.81), final(later[1])]
        # A voiced frame that never gets a label (its tracker restarted):
        # printed without a speaker once frames FINAL_WAIT_SECONDS newer come.
        orphan, after = frame(5), frame(6, 0, seconds=FINAL_WAIT_SECONDS)
        frame_rows.record([orphan])
        frame_rows.record([after])
        assert tail.expect(2) == [final(orphan), final(after)]
        assert tail.lines.empty()
    finally:
        tail.stop()


def test_follow_segments_prints_segments_as_they_are_committed(frame_rows, pg_url):
    rows = [FrameRow("acme", "conn-1", seq, T0 + seq * 100_000, 1, 7001, 4.0) for seq in range(6)]
    first = label(rows[:2], "alice", 0.8)
    frame_rows.record(rows[:3], [first])
    tail = Follow("acme", pg_url, "--segments")
    try:
        assert tail.expect(1) == [segment(first)]
        second = label(rows[2:], "bob", None)
        frame_rows.record(rows[3:], [second])
        frame_rows.record([], [first])  # applied again: not a new segment
        assert tail.expect(1) == [segment(second)]
        frame_rows.record([FrameRow("acme", "conn-2", 0, T0, 1, 7001, 4.0)],
                          [label([FrameRow("acme", "conn-2", 0, T0, 1, 7001, 4.0)], "carol", 0.5)])
        assert len(tail.expect(1)) == 1 and tail.lines.empty()
    finally:
        tail.stop()


def test_final_and_segments_are_one_or_the_other(pg_url):
    done = run_tail("acme", "--database", pg_url, "--final", "--segments")
    assert done.returncode == 2 and done.stdout == "" and "not allowed with argument" in done.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["acme", "--database", "mysql://db.example/voice"], "scheme 'mysql://'"),
    (["acme", "--database", "postgresql://db.example:port/voice"], "port 'port'"),
    (["acme"], "no database: give --database"),
    (["not an account", "--database", "postgresql://db.example/voice"], "invalid ACCOUNTCODE"),
])
def test_bad_arguments_exit_2_with_one_clear_line(args, message):
    done = run_tail(*args, env={"DATABASE_URL": ""})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("voicestream-tail: ") and message in done.stderr


def test_an_unreachable_database_exits_2(tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/voicestream"  # nothing listens there
    for follow in ([], ["--follow"]):
        done = run_tail("acme", "--database", url, *follow)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and "voicestream-tail: cannot connect to the database" in done.stderr


def test_a_database_no_worker_used_exits_2(pg_url):
    done = run_tail("acme", "--database", pg_url)
    assert done.returncode == 2 and "has no frames table" in done.stderr and done.stderr.count("\n") == 1
