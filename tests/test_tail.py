"""voicetools.tail (voicestream-tail) as a user runs it (a real subprocess)
against a real PostgreSQL: an account's lines in the exact log format ordered by frame time,
--follow printing rows as they are committed (LISTEN/NOTIFY, a look-back for
late commits), and a clear exit 2 for a bad URL or an unreachable database."""
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

from voicestream.logline import format_line, parse_line
from voicestream.stamps import stamp_time
from voicetools.cluster import free_port
from voicetools.paths import REPO
from worker.storage.postgres.connection import Database
from worker.storage.postgres.frames import FrameRows
from worker.storage.postgres.notify import FRAMES_CHANNEL
from worker.storage.postgres.spool import Spool
from worker.storage.rows import FrameRow

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


class Follow:
    """voicestream-tail --follow as a subprocess; its lines arrive on a queue."""

    def __init__(self, account: str, url: str) -> None:
        self.proc = subprocess.Popen([*TAIL, account, "--database", url, "--follow"], cwd=REPO,
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
