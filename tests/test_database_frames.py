"""FrameRows against a real PostgreSQL: one row per frame in one statement
per batch, exactly once across retries and workers, and nothing lost or
doubled through an outage (rows wait in the spool, also across a restart)."""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from voicestream.logline import format_line
from voicestream.stamps import stamp_time
from voicetools.postgres import PostgresServer
from worker.storage.postgres.connection import Database
from worker.storage.postgres.frames import FrameRows, row_line
from worker.storage.postgres.notify import FRAMES_CHANNEL
from worker.storage.postgres.spool import Spool
from worker.storage.rows import FrameRow

pytest_plugins = ["pg"]  # pg_server, pg_url, own_pg
pytestmark = pytest.mark.integration  # a PostgreSQL server process

T0 = 1_674_222_284_123_435  # 2023-01-20 13:44:44.123435


def frames(n: int, stream: str = "s1", account: str = "acme", first: int = 0) -> list[FrameRow]:
    return [FrameRow(account, stream, seq, T0 + seq * 100_000, seq % 2, 7001, 3.0 + seq / 10) for seq in
            range(first, first + n)]


def keys(rows: list[FrameRow]) -> set[tuple[str, str, int]]:
    return {(r.account, r.stream, r.seq) for r in rows}


def stored_keys(url: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute("SELECT account, stream, seq FROM frames ORDER BY account, stream, seq")]


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.02)


class Worker:
    """A worker's database side: its Database, spool and FrameRows."""

    def __init__(self, url: str, spool_path, host: str = "host-a", max_rows: int = 10_000) -> None:
        self.database = Database(url, name=host).open()
        self.spool = Spool(spool_path, max_rows)
        self.rows = FrameRows(self.database, self.spool, host)
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.rows.close()
            self.spool.close()
            self.database.close()


@pytest.fixture
def worker(pg_url, tmp_path) -> Iterator[Worker]:
    w = Worker(pg_url, tmp_path / "spool.db")
    assert w.database.up
    yield w
    w.close()


def log_every_statement(server: PostgresServer, url: str) -> None:
    """The server logs every statement run in url's database from now on
    (read back with logged_between)."""
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET log_statement = 'all'").format(
            sql.Identifier(url.rsplit("/", 1)[1])))


def logged_between(server_log: str, begin: str, end: str) -> str:
    """What the server logged between the lines of two marker queries."""
    return server_log[server_log.index("\n", server_log.index(begin)) + 1:server_log.rindex("\n", 0,
                                                                                           server_log.index(end))]


def test_a_batch_is_one_row_per_frame_in_one_statement(pg_server, pg_url, tmp_path):
    log_every_statement(pg_server, pg_url)
    w = Worker(pg_url, tmp_path / "spool.db")
    try:
        batch = frames(40, "s1") + frames(20, "s2", account="other")
        begin, end = f"begin-{uuid.uuid4()}", f"end-{uuid.uuid4()}"
        with psycopg.connect(pg_url, autocommit=True) as marker:
            marker.execute(sql.SQL("SELECT {}").format(sql.Literal(begin)))
            w.rows.record(batch)
            marker.execute(sql.SQL("SELECT {}").format(sql.Literal(end)))
        logged = logged_between(pg_server.log(), begin, end)
        statements = [line for line in logged.splitlines() if "LOG:  statement:" in line or "LOG:  execute" in line]
        assert len(statements) == 1 and "INSERT INTO frames" in logged, logged
        assert set(stored_keys(pg_url)) == keys(batch) and len(stored_keys(pg_url)) == 60
        assert w.rows.health() == {"mode": "postgresql", "state": "up", "spooled": 0, "dropped": 0,
                                   "spooled_finals": 0, "dropped_finals": 0}
    finally:
        w.close()


def test_a_retried_batch_is_a_no_op_on_any_worker(worker, pg_url, tmp_path):
    batch = frames(10)
    worker.rows.record(batch)
    worker.rows.record(batch)  # the balancer retried on this worker
    other = Worker(pg_url, tmp_path / "other.db", host="host-b")
    try:
        other.rows.record(batch[3:] + frames(2, first=10))  # ... and on another host
    finally:
        other.close()
    assert stored_keys(pg_url) == sorted(keys(frames(12)))
    with psycopg.connect(pg_url) as conn:
        hosts = dict(conn.execute("SELECT seq, host FROM frames"))
    assert {hosts[seq] for seq in range(10)} == {"host-a"} and hosts[10] == hosts[11] == "host-b"


def test_frames_of_two_streams_with_the_same_stamp_both_stay(worker, pg_url):
    # Two balancer replicas can stamp two frames of an account in the same
    # microsecond: the stream keeps them apart.
    worker.rows.record([FrameRow("acme", "replica-1-conn", 0, T0, 1, 7001, 3.0),
                        FrameRow("acme", "replica-2-conn", 0, T0, 0, 7002, 4.0)])
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT stream, stamp, voice, worker FROM frames ORDER BY stream").fetchall() == \
            [("replica-1-conn", T0, 1, 7001), ("replica-2-conn", T0, 0, 7002)]


def test_a_row_reads_back_as_the_frames_log_line(worker, pg_url):
    cases = [(1, 3.5, None, None), (1, 2.5, "alice", 0.125), (0, 7.49, "bob", 0.715), (1, 11.0, "unknown", -0.004),
             (1, 0.4, "carol", None), (0, 1234.6, "dave", 0.99999)]
    worker.rows.record([FrameRow("acme", "s1", seq, T0 + seq, voice, 7003, ms, speaker, score)
                        for seq, (voice, ms, speaker, score) in enumerate(cases)])
    with psycopg.connect(pg_url) as conn:
        stored = conn.execute("SELECT stamp, voice, worker, ms, speaker, score FROM frames ORDER BY seq").fetchall()
    # What the worker writes in its file: format_line of the unrounded values.
    assert [row_line(*row) for row in stored] == [format_line(stamp_time(T0 + seq), voice, 7003, ms, speaker, score)
                                                 for seq, (voice, ms, speaker, score) in enumerate(cases)]


def test_new_rows_notify_each_account_once(worker, pg_url):
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {FRAMES_CHANNEL}")
        worker.rows.record(frames(5, account="acme") + frames(3, account="other"))
        heard = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
        worker.rows.record(frames(5, account="acme"))  # a retry: nothing new, nothing to tell
        worker.rows.record(frames(1, account="third"))
        heard += [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert sorted(heard[:2]) == ["acme", "other"] and heard[2:] == ["third"]


def test_rows_postgresql_would_refuse_are_counted_not_stored(worker, pg_url):
    bad = [FrameRow("acme", "s\x00", 0, T0, 1, 7001, 3.0), FrameRow("acme", "s1", -1, T0, 1, 7001, 3.0),
           FrameRow("acme", "s1", 5, T0, 1, 7001, float("nan")), FrameRow("acme", "s\ud800", 0, T0, 1, 7001, 3.0)]
    worker.rows.record(bad + frames(2))
    assert stored_keys(pg_url) == sorted(keys(frames(2)))
    assert worker.rows.health()["dropped"] == 4 and len(worker.spool) == 0


def test_an_outage_spools_rows_and_flushes_them_exactly_once(own_pg, tmp_path):
    url = own_pg.url
    w = Worker(url, tmp_path / "spool.db")
    try:
        before = frames(10, "before")
        w.rows.record(before)
        own_pg.server.stop("immediate")
        during = frames(10, "during")
        w.rows.record(during[:5])  # finds the dead connection: the rows go to the spool
        assert not w.database.up and len(w.spool) == 5
        requests = w.database.pool.get_stats()["requests_num"]
        w.rows.record(during[5:])
        w.rows.record(during[3:7])  # a retry of frames already spooled
        # While down, batches go straight to the spool: not even a connection is asked for.
        assert w.database.pool.get_stats()["requests_num"] == requests
        health = w.rows.health()
        assert (health["state"], health["spooled"], health["dropped"]) == ("down", 10, 0) and health["error"]
        own_pg.server.start()
        eventually(lambda: len(w.spool) == 0, "the spool flushed")
        after = frames(10, "after")
        w.rows.record(after)
        assert stored_keys(url) == sorted(keys(before + during + after))  # none missing; the key admits no twice
        assert w.rows.health() == {"mode": "postgresql", "state": "up", "spooled": 0, "dropped": 0,
                                   "spooled_finals": 0, "dropped_finals": 0}
    finally:
        w.close()


def test_spooled_rows_survive_a_worker_restart(own_pg, tmp_path):
    url = own_pg.url
    first = Worker(url, tmp_path / "spool.db")
    own_pg.server.stop("immediate")
    try:
        first.rows.record(frames(20))
        assert len(first.spool) == 20
    finally:
        first.close()  # as a restart: the rows stay in the file
    own_pg.server.start()
    second = Worker(url, tmp_path / "spool.db")
    try:
        eventually(lambda: len(second.spool) == 0, "the new worker flushed the old spool")
        assert stored_keys(url) == sorted(keys(frames(20)))
    finally:
        second.close()


def test_rows_already_stored_are_not_written_twice_from_the_spool(worker, pg_url, tmp_path):
    # A worker can die after PostgreSQL committed but before the spool forgot
    # the rows: they are flushed again at the next start, as no-ops.
    worker.rows.record(frames(5))
    worker.close()
    spool = Spool(tmp_path / "spool.db", 100)
    spool.add([(r.account, r.stream, r.seq, r.stamp, r.voice, r.worker, round(r.ms), None, None, "host-a")
               for r in frames(8)])
    spool.close()
    again = Worker(pg_url, tmp_path / "spool.db")
    try:
        eventually(lambda: len(again.spool) == 0, "the spool flushed")
        assert stored_keys(pg_url) == sorted(keys(frames(8)))
    finally:
        again.close()


def test_a_slow_database_sends_rows_to_the_spool(worker, pg_url, caplog):
    # A lock held elsewhere makes the insert wait: the statement timeout
    # (the database timeout, 0.5 s) ends the wait and the rows are spooled.
    release = threading.Event()
    locked = threading.Event()

    def hold_lock() -> None:
        with psycopg.connect(pg_url) as conn:
            conn.execute("LOCK TABLE frames IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(60)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(30)
        with caplog.at_level(logging.WARNING, logger="worker.database"):
            worker.rows.record(frames(5))
        assert len(worker.spool) == 5
        assert any("is down: statement timed out" in r.message for r in caplog.records)
    finally:
        release.set()
        holder.join(60)
    eventually(lambda: len(worker.spool) == 0, "the spool flushed once the lock is gone")
    assert stored_keys(pg_url) == sorted(keys(frames(5)))
