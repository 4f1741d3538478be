"""Final speaker labels in the shared record, against a real PostgreSQL: a
batch's labels (closed segments) go in the batch's one statement - the
segment a row of its own, each of its frames' rows the final speaker and
score - exactly once however often they are applied; a label whose rows are
not in PostgreSQL yet waits in the spool and is applied after them, through
an outage and a restart."""
from __future__ import annotations

import json
import logging
import re
import uuid

import psycopg
import pytest
from psycopg import sql

from test_database_frames import T0, Worker, eventually, frames, log_every_statement, logged_between
from worker.storage.postgres.frames import LABEL_PATIENCE_SECONDS, insert_with_labels
from worker.storage.postgres.notify import FRAMES_CHANNEL
from worker.storage.postgres.spool import Spool
from worker.storage.rows import FinalLabel, FrameRow

pytest_plugins = ["pg"]  # pg_server, pg_url, own_pg
pytestmark = pytest.mark.integration  # a PostgreSQL server process


def label(start: int, end: int, speaker: str = "alice", score: float | None = 0.714, stream: str = "s1",
          account: str = "acme", frames: int | None = None) -> FinalLabel:
    """The final label of frames start..end of frames()' stream."""
    return FinalLabel(account, stream, start, end, speaker, score, end - start + 1 if frames is None else frames,
                      T0 + start * 100_000, T0 + end * 100_000)


def finals(url: str, stream: str = "s1") -> dict[int, tuple[str | None, float | None]]:
    """seq -> (final_speaker, final_score as the line shows it) of a stream's rows."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT seq, final_speaker, final_score FROM frames WHERE stream = %s ORDER BY seq",
                            (stream,)).fetchall()
    return {seq: (speaker, None if score is None else round(score, 2)) for seq, speaker, score in rows}


def segments(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT account, stream, start_seq, end_seq, start_stamp, end_stamp, speaker, "
                            "round(score::numeric, 2)::float, frames, host FROM segments "
                            "ORDER BY account, stream, start_seq").fetchall()


def segment_row(final: FinalLabel, host: str = "host-a") -> tuple:
    return (final.account, final.stream, final.start_seq, final.end_seq, final.start, final.end, final.speaker,
            None if final.score is None else round(final.score, 2), final.frames, host)


@pytest.fixture
def worker(pg_url, tmp_path):
    w = Worker(pg_url, tmp_path / "spool.db")
    assert w.database.up
    yield w
    w.close()


def test_a_batchs_labels_go_in_its_one_statement(pg_server, pg_url, tmp_path):
    log_every_statement(pg_server, pg_url)
    w = Worker(pg_url, tmp_path / "spool.db")
    try:
        w.rows.record(frames(6))
        # Frames 6-9 in this batch; its labels cover rows stored before
        # (2-5) and rows of the batch itself (6-8): both get them.
        first, second = label(2, 5, "alice", 0.714), label(6, 8, "bob", None)
        begin, end = f"begin-{uuid.uuid4()}", f"end-{uuid.uuid4()}"
        with psycopg.connect(pg_url, autocommit=True) as marker:
            marker.execute(sql.SQL("SELECT {}").format(sql.Literal(begin)))
            w.rows.record(frames(4, first=6), [first, second])
            marker.execute(sql.SQL("SELECT {}").format(sql.Literal(end)))
        logged = logged_between(pg_server.log(), begin, end)
        statements = [line for line in logged.splitlines() if "LOG:  statement:" in line or "LOG:  execute" in line]
        assert len(statements) == 1 and "INSERT INTO segments" in logged, logged
        assert finals(pg_url) == {0: (None, None), 1: (None, None), 2: ("alice", 0.71), 3: ("alice", 0.71),
                                  4: ("alice", 0.71), 5: ("alice", 0.71), 6: ("bob", None), 7: ("bob", None),
                                  8: ("bob", None), 9: (None, None)}
        assert segments(pg_url) == [segment_row(first), segment_row(second)]
        assert w.rows.health() == {"mode": "postgresql", "state": "up", "spooled": 0, "dropped": 0,
                                   "spooled_finals": 0, "dropped_finals": 0}
    finally:
        w.close()


def test_a_label_applied_again_changes_nothing(worker, pg_url, tmp_path):
    worker.rows.record(frames(5), [label(0, 4)])
    before = (finals(pg_url), segments(pg_url))
    worker.rows.record(frames(5), [label(0, 4)])  # a retry on this worker
    other = Worker(pg_url, tmp_path / "other.db", host="host-b")
    try:
        other.rows.record([], [label(0, 4)])  # ... and from another host
    finally:
        other.close()
    assert (finals(pg_url), segments(pg_url)) == before
    assert before[1] == [segment_row(label(0, 4))] and len(worker.spool) == worker.spool.labels == 0


def test_labels_notify_their_account(worker, pg_url):
    worker.rows.record(frames(5, account="acme") + frames(3, account="other"))
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {FRAMES_CHANNEL}")
        worker.rows.record([], [label(0, 4)])  # no new row: the label alone tells voicestream-tail
        heard = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert heard == ["acme"]


def test_a_label_whose_rows_are_spooled_reaches_them(own_pg, tmp_path):
    w = Worker(own_pg.url, tmp_path / "spool.db")
    try:
        own_pg.server.stop("immediate")
        w.rows.record(frames(5))  # to the spool: the database is gone
        assert len(w.spool) == 5 and not w.database.up
        own_pg.server.start()
        assert w.database.wait_up(30)
        # Up again, the flusher moving the rows at the same time: the label
        # finds them in PostgreSQL, or waits in the spool until they are.
        w.rows.record(frames(2, first=5), [label(0, 6)])
        eventually(lambda: len(w.spool) == w.spool.labels == 0, "the rows and the label flushed")
        assert finals(own_pg.url) == {seq: ("alice", 0.71) for seq in range(7)}
        assert segments(own_pg.url) == [segment_row(label(0, 6))]
    finally:
        w.close()


def test_the_flusher_applies_a_label_after_its_rows(pg_server, pg_url, tmp_path, caplog):
    log_every_statement(pg_server, pg_url)
    # A spool left by a worker that stopped during an outage: 1,200 rows
    # (three flush statements), a label naming the last of them, then a
    # label of rows already flushed before.
    spool = Spool(tmp_path / "spool.db", 10_000)
    rows = [(r.account, r.stream, r.seq, r.stamp, r.voice, r.worker, round(r.ms), None, None, "host-a")
            for r in frames(1200)]
    first, last = label(0, 9), label(1190, 1199, "bob")
    spool.add(rows, [spool_label(last), spool_label(first)])
    spool.close()
    begin = f"begin-{uuid.uuid4()}"
    with psycopg.connect(pg_url, autocommit=True) as marker:
        marker.execute(sql.SQL("SELECT {}").format(sql.Literal(begin)))
    with caplog.at_level(logging.WARNING, logger="worker.database"):
        w = Worker(pg_url, tmp_path / "spool.db")
        try:
            eventually(lambda: len(w.spool) == w.spool.labels == 0, "the spool flushed")
        finally:
            w.close()
    logged = pg_server.log()[pg_server.log().index(begin):]
    # A log entry's continuation lines start with a tab.
    statements = [entry for entry in re.split(r"\n(?=\S)", logged) if "INSERT INTO frames" in entry]
    # Rows, rows, rows, then both labels in one statement: neither applied
    # before its rows, so neither applied twice.
    assert len(statements) == 4 and "INSERT INTO segments" in statements[3] and \
        not any("INSERT INTO segments" in entry for entry in statements[:3]), statements
    assert not any("fewer rows" in r.message for r in caplog.records)
    assert segments(pg_url) == [segment_row(first), segment_row(last)]


def spool_label(final: FinalLabel) -> tuple:
    return (final.account, final.stream, final.start_seq, final.end_seq, final.start, final.end, final.speaker,
            None if final.score is None else round(final.score, 2), final.frames, "host-a")


def test_an_outage_spools_labels_with_their_rows_and_applies_them_once(own_pg, tmp_path):
    w = Worker(own_pg.url, tmp_path / "spool.db")
    try:
        w.rows.record(frames(3))
        own_pg.server.stop("immediate")
        w.rows.record(frames(3, first=3), [label(0, 2, "alice")])
        w.rows.record(frames(3, first=6), [label(3, 5, "bob", 0.5)])
        w.rows.record([], [label(3, 5, "bob", 0.5)])  # applied twice: spooled once
        health = w.rows.health()
        assert (health["state"], health["spooled"], health["spooled_finals"]) == ("down", 6, 2)
        own_pg.server.start()
        eventually(lambda: len(w.spool) == w.spool.labels == 0, "the spool flushed")
        assert finals(own_pg.url) == {**{seq: ("alice", 0.71) for seq in range(3)},
                                      **{seq: ("bob", 0.5) for seq in range(3, 6)},
                                      **{seq: (None, None) for seq in range(6, 9)}}
        assert segments(own_pg.url) == [segment_row(label(0, 2, "alice")), segment_row(label(3, 5, "bob", 0.5))]
    finally:
        w.close()


def test_spooled_labels_survive_a_worker_restart(own_pg, tmp_path):
    first = Worker(own_pg.url, tmp_path / "spool.db")
    own_pg.server.stop("immediate")
    try:
        first.rows.record(frames(10), [label(2, 8)])
        assert (len(first.spool), first.spool.labels) == (10, 1)
    finally:
        first.close()
    own_pg.server.start()
    second = Worker(own_pg.url, tmp_path / "spool.db")
    try:
        eventually(lambda: len(second.spool) == second.spool.labels == 0, "the new worker flushed the old spool")
        assert [seq for seq, (speaker, _) in finals(own_pg.url).items() if speaker == "alice"] == list(range(2, 9))
    finally:
        second.close()


def test_a_label_waits_for_another_workers_rows(worker, pg_url):
    # The rows of a label may be another worker's, committing moments later:
    # the label finds none, waits in the spool, and reaches them once there.
    worker.rows.record([], [label(0, 4)])
    assert worker.spool.labels == 1 and finals(pg_url) == {}
    with psycopg.connect(pg_url) as other:
        other.execute("INSERT INTO frames (account, stream, seq, stamp, voice, worker, ms, host) "
                      "SELECT 'acme', 's1', seq, %s + seq * 100000, 1, 7002, 3, 'host-b' "
                      "FROM generate_series(0, 4) seq",
                      (T0,))
    eventually(lambda: worker.spool.labels == 0, "the label applied")
    assert finals(pg_url) == {seq: ("alice", 0.71) for seq in range(5)}


def test_a_label_whose_rows_never_come_is_applied_as_far_as_it_goes(worker, pg_url, caplog):
    worker.rows.record(frames(3))  # frames 3 and 4 never stored (say, dropped by a full spool)
    with caplog.at_level(logging.WARNING, logger="worker.database"):
        worker.rows.record([], [label(0, 4)])
        eventually(lambda: worker.spool.labels == 0, "the label given up on", timeout=LABEL_PATIENCE_SECONDS + 30)
    assert finals(pg_url) == {seq: ("alice", 0.71) for seq in range(3)}
    assert segments(pg_url) == [segment_row(label(0, 4))]
    assert any("reached fewer rows than its 5 frames" in r.message for r in caplog.records)


def test_a_range_with_a_refused_frame_counts_the_frames_it_holds(worker, pg_url):
    # Frame 2 was refused as invalid (no row, not in the segment): the label
    # of 0-4 holds 4 frames and finds them all, nothing waits.
    rows = [r for r in frames(5) if r.seq != 2]
    worker.rows.record(rows, [label(0, 4, frames=4)])
    assert worker.spool.labels == 0 and set(finals(pg_url)) == {0, 1, 3, 4}


def test_labels_postgresql_would_refuse_are_counted_not_stored(worker, pg_url):
    bad = [label(0, 1, speaker="al\x00ice"), FinalLabel("acme", "s1", -1, 2, "alice", 0.5, 4, T0, T0),
           label(0, 1, score=float("inf")), FinalLabel("acme", "s1", 0, 1, "alice", 0.5, 0, T0, T0)]
    worker.rows.record(frames(2), [*bad, label(0, 1)])
    assert segments(pg_url) == [segment_row(label(0, 1))]
    health = worker.rows.health()
    assert (health["dropped_finals"], health["spooled_finals"], health["dropped"]) == (4, 0, 0)


def test_a_full_spool_drops_new_labels_and_counts_them(own_pg, tmp_path):
    w = Worker(own_pg.url, tmp_path / "spool.db", max_rows=3)
    try:
        own_pg.server.stop("immediate")
        w.rows.record([], [label(0, 0), label(1, 1), label(2, 2), label(3, 3), label(4, 4)])
        health = w.rows.health()
        assert (health["spooled_finals"], health["dropped_finals"]) == (3, 2)
    finally:
        w.close()


def test_final_scores_read_back_as_the_line_shows_them(worker, pg_url):
    scores = [0.125, 0.715, -0.004, 0.99999, None]
    worker.rows.record([FrameRow("acme", "s1", seq, T0 + seq, 1, 7001, 3.0) for seq in range(len(scores))],
                       [FinalLabel("acme", "s1", seq, seq, "alice", score, 1, T0 + seq, T0 + seq)
                        for seq, score in enumerate(scores)])
    with psycopg.connect(pg_url) as conn:
        stored = [score for (score,) in conn.execute("SELECT final_score FROM frames ORDER BY seq")]
    assert [None if s is None else f"{s:.2f}" for s in stored] == \
        [None if s is None else f"{s:.2f}" for s in scores]


def test_a_label_reaches_its_rows_through_the_key_whatever_the_tables_size(worker, pg_url):
    # The plan, not a timing: a sequential scan of frames would cost every
    # batch with a label more as the table grows.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO frames (account, stream, seq, stamp, voice, worker, ms, host) "
                     "SELECT 'acc' || (seq %% 50), 's1', seq, %s + seq, 1, 7001, 3, 'host-a' "
                     "FROM generate_series(0, 49999) seq", (T0,))
        conn.execute("ANALYZE frames")
        final = label(100, 105, account="acc0")
        plan = "\n".join(row[0] for row in conn.execute(
            "EXPLAIN " + insert_with_labels(1),
            (json.dumps([]), *worker.rows._label(final))))  # the statement record() sends
    updating = plan[plan.index("Update on frames"):plan.index("CTE segs")]
    assert "Index Scan on frames_pkey" in updating or "Index Scan using frames_pkey" in updating, plan
    assert "Seq Scan" not in updating, plan
