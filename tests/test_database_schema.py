"""Schema migrations on a real PostgreSQL: a fresh database gets the schema,
workers starting at once apply it once between them, and a re-run changes
nothing."""
from __future__ import annotations

import threading

import psycopg
import pytest

from worker.storage.postgres.connection import Database
from worker.storage.postgres.schema import MIGRATIONS, SCHEMA_MIGRATIONS, SCHEMA_VERSION, migrate

pytest_plugins = ["pg"]  # pg_server, pg_url
pytestmark = pytest.mark.integration  # a PostgreSQL server process

TABLES = {
    "schema_migrations": {"version", "applied"},
    "voiceprints": {"account", "name", "encoder", "model", "dim", "vector", "embedding_sum", "samples",
                    "speech_seconds", "created", "updated"},
    "activity": {"id", "time", "event", "worker", "account", "fields"},
    "frames": {"id", "account", "stream", "seq", "stamp", "voice", "worker", "ms", "speaker", "score", "host",
               "final_speaker", "final_score"},
    "account_settings": {"account", "encoder", "threshold", "updated"},
    "segments": {"id", "account", "stream", "start_seq", "end_seq", "start_stamp", "end_stamp", "speaker", "score",
                 "frames", "host"},
}


def columns(conn: psycopg.Connection) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for table, column in conn.execute("SELECT table_name, column_name FROM information_schema.columns "
                                      "WHERE table_schema = 'public'"):
        found.setdefault(table, set()).add(column)
    return found


def test_a_fresh_database_gets_the_schema(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert columns(conn) == {}
        assert migrate(conn) == SCHEMA_VERSION
        assert columns(conn) == TABLES
        keys = dict(conn.execute("SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
                                 "WHERE contype = 'p' AND conrelid::regclass::text IN ('frames', 'voiceprints', "
                                 "'segments')"))
        # A frame's identity: its stream keeps two balancer replicas' frames
        # apart; a segment's: its stream and first frame.
        assert keys == {"frames": "PRIMARY KEY (account, stream, seq)", "voiceprints": "PRIMARY KEY (account, name)",
                        "segments": "PRIMARY KEY (account, stream, start_seq)"}
        indexes = {row[0] for row in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename IN "
                                                  "('frames', 'segments')")}
        assert {"frames_account_stamp", "frames_account_id", "segments_account_end", "segments_account_id"} <= indexes


def test_rows_from_before_final_labels_keep_their_values(pg_url):
    # A database a worker of schema version 2 used: migrating adds the final
    # label columns, NULL for its rows, and the segments table.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(SCHEMA_MIGRATIONS)
            for version, migration in MIGRATIONS[:2]:
                conn.execute(migration)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        conn.execute("INSERT INTO frames (account, stream, seq, stamp, voice, worker, ms, speaker, score, host) "
                     "VALUES ('acme', 's1', 1, 1674222284123435, 1, 7001, 4, 'alice', 0.81, 'h')")
        assert migrate(conn) == SCHEMA_VERSION
        assert conn.execute("SELECT seq, speaker, final_speaker, final_score FROM frames").fetchall() == \
            [(1, "alice", None, None)]
        assert columns(conn) == TABLES


def test_a_rerun_is_a_no_op(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn)
        before = conn.execute("SELECT version, applied FROM schema_migrations").fetchall()
        conn.execute("INSERT INTO activity (event, worker, account, fields) VALUES ('enroll', 'h:7001', 'a', '{}')")
        assert migrate(conn) == SCHEMA_VERSION
        assert conn.execute("SELECT version, applied FROM schema_migrations").fetchall() == before
        assert conn.execute("SELECT count(*) FROM activity").fetchone() == (1,)  # nothing recreated


def test_workers_starting_at_once_migrate_once(pg_url):
    # Four connections released together by a barrier: without the advisory
    # lock, concurrent CREATE TABLEs fail (duplicate key in pg_type) or a
    # version is inserted twice.
    conns = [psycopg.connect(pg_url, autocommit=True) for _ in range(4)]
    barrier = threading.Barrier(len(conns))
    versions: list[int] = []
    errors: list[BaseException] = []

    def start(conn: psycopg.Connection) -> None:
        try:
            barrier.wait()
            versions.append(migrate(conn))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(conn,)) for conn in conns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == [] and versions == [SCHEMA_VERSION] * 4
        assert conns[0].execute("SELECT array_agg(version) FROM schema_migrations").fetchone() == \
            ([v for v in range(1, SCHEMA_VERSION + 1)],)
        assert columns(conns[0]) == TABLES
    finally:
        for conn in conns:
            conn.close()


def test_a_worker_migrates_when_it_connects(pg_url):
    with Database(pg_url, name="test").open() as database:
        assert database.up and database.version == SCHEMA_VERSION
        with database.connection() as conn:
            assert columns(conn) == TABLES
