"""The frame rows' spool (a SQLite file on the worker's disk), and the final
labels waiting in it: durable across a restart, each frame (each label) once,
bounded with a count of what it dropped. No PostgreSQL needed: while the
database is unreachable every row goes here."""
from __future__ import annotations

import sqlite3

import pytest

from voicetools.cluster import free_port
from worker.storage.postgres.connection import Database
from worker.storage.postgres.frames import FrameRows
from worker.storage.postgres.spool import SCHEMA, Spool, SpoolInUse
from worker.storage.rows import FrameRow


def row(seq: int, stream: str = "s1", account: str = "acme") -> tuple:
    return (account, stream, seq, 1_700_000_000_000_000 + seq, 1, 7001, 3, None, None, "host-a")


def test_rows_leave_oldest_first_and_only_when_removed(tmp_path):
    spool = Spool(tmp_path / "spool.db", max_rows=100)
    try:
        assert spool.add([row(i) for i in range(5)]) == 5 and len(spool) == 5
        first = spool.oldest(3)
        assert [r for _, r in first] == [row(0), row(1), row(2)]
        assert spool.oldest(3) == first  # looking takes nothing away
        spool.remove([spool_id for spool_id, _ in first])
        assert len(spool) == 2 and [r for _, r in spool.oldest(10)] == [row(3), row(4)]
    finally:
        spool.close()


def test_a_frame_is_spooled_once(tmp_path):
    spool = Spool(tmp_path / "spool.db", max_rows=100)
    try:
        spool.add([row(1), row(2)])
        spool.add([row(2), row(3)])  # a retry of frame 2 on this worker
        assert len(spool) == 3 and [r[2] for _, r in spool.oldest(10)] == [1, 2, 3]
        spool.add([row(2, stream="s2")])  # the same seq in another stream is another frame
        assert len(spool) == 4
    finally:
        spool.close()


def test_the_spool_survives_a_restart(tmp_path):
    spool = Spool(tmp_path / "spool.db", max_rows=100)
    spool.add([row(i) for i in range(4)])
    spool.close()
    again = Spool(tmp_path / "spool.db", max_rows=100)
    try:
        assert len(again) == 4 and [r for _, r in again.oldest(10)] == [row(i) for i in range(4)]
    finally:
        again.close()


def test_one_process_at_a_time(tmp_path):
    spool = Spool(tmp_path / "spool.db", max_rows=100)
    with pytest.raises(SpoolInUse, match="in use by another worker process"):
        Spool(tmp_path / "spool.db", max_rows=100)
    spool.close()
    Spool(tmp_path / "spool.db", max_rows=100).close()  # free again once closed (or its process died)


def test_a_full_spool_drops_new_rows_and_counts_them(tmp_path):
    spool = Spool(tmp_path / "spool.db", max_rows=10)
    try:
        assert spool.add([row(i) for i in range(15)]) == 10
        assert len(spool) == 10 and spool.dropped == 5
        assert [r[2] for _, r in spool.oldest(20)] == list(range(10))  # the oldest kept
        assert spool.add([row(99)]) == 0 and spool.dropped == 6
        spool.remove([spool_id for spool_id, _ in spool.oldest(2)])
        assert spool.add([row(100), row(101), row(102)]) == 2 and spool.dropped == 7
    finally:
        spool.close()


def test_frame_rows_of_an_unreachable_database_spool_and_report_drops(tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/voicestream"  # nothing listens there
    with Database(url, name="unreachable").open(wait=10) as database:
        spool = Spool(tmp_path / "spool.db", max_rows=10)
        rows = FrameRows(database, spool, host="host-a")
        try:
            rows.record([FrameRow("acme", "s1", seq, 1_700_000_000_000_000 + seq, 1, 7001, 3.0) for seq in range(15)])
            health = rows.health()
            assert (health["state"], health["spooled"], health["dropped"]) == ("down", 10, 5)
        finally:
            rows.close()
            spool.close()


def label(start: int, end: int, stream: str = "s1") -> tuple:
    return ("acme", stream, start, end, 1_700_000_000_000_000 + start, 1_700_000_000_000_000 + end, "alice", 0.71,
            end - start + 1, "host-a")


def test_final_labels_wait_in_order_once_each_and_survive_a_restart(tmp_path):
    spool = Spool(tmp_path / "spool.db", max_rows=100)
    spool.add([row(i) for i in range(3)], [label(0, 2)])  # rows and their label in one transaction
    spool.add([], [label(3, 5), label(0, 2)])  # the first again: kept once
    assert (len(spool), spool.labels) == (3, 2)
    spool.close()
    again = Spool(tmp_path / "spool.db", max_rows=100)
    try:
        assert (len(again), again.labels) == (3, 2)
        assert [found for _, found in again.oldest_labels(10)] == [label(0, 2), label(3, 5)]
        again.remove_labels([spool_id for spool_id, _ in again.oldest_labels(1)])
        assert [found for _, found in again.oldest_labels(10)] == [label(3, 5)] and again.labels == 1
    finally:
        again.close()


def test_a_label_knows_whether_its_rows_are_still_spooled(tmp_path):
    spool = Spool(tmp_path / "spool.db", max_rows=100)
    try:
        spool.add([row(4), row(9, stream="s2")])
        assert spool.holds_rows(label(2, 4)) and spool.holds_rows(label(4, 7))
        assert not spool.holds_rows(label(5, 8)) and not spool.holds_rows(label(9, 9))  # s2's seq 9 is not s1's
        spool.remove([spool_id for spool_id, _ in spool.oldest(1)])
        assert not spool.holds_rows(label(2, 4))
    finally:
        spool.close()


def test_a_spool_from_before_final_labels_gets_their_table(tmp_path):
    with sqlite3.connect(tmp_path / "spool.db") as old:  # a spool file as workers before issue 15 left it
        old.execute(SCHEMA)
        old.execute("INSERT INTO frame_rows (account, stream, seq, stamp, voice, worker, ms, host) "
                    "VALUES ('acme', 's1', 1, 1700000000000001, 1, 7001, 3, 'host-a')")
    old.close()
    spool = Spool(tmp_path / "spool.db", max_rows=100)
    try:
        assert (len(spool), spool.labels) == (1, 0)
        spool.add([], [label(1, 1)])
        assert spool.labels == 1
    finally:
        spool.close()


def test_a_full_spool_drops_new_labels_and_counts_them(tmp_path):
    spool = Spool(tmp_path / "spool.db", max_rows=2)
    try:
        assert spool.add([row(0)], [label(i, i) for i in range(4)]) == 1
        assert (len(spool), spool.labels, spool.dropped, spool.dropped_labels) == (1, 2, 0, 2)
        assert [found for _, found in spool.oldest_labels(10)] == [label(0, 0), label(1, 1)]  # the oldest kept
    finally:
        spool.close()
