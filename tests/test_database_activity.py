"""ActivityRows: the activity log as rows of the shared PostgreSQL, written
with the file log's call (write(event, account, **fields)); a database
outage never turns a done enrollment into an error."""
from __future__ import annotations

import logging

import psycopg
import pytest

from voicetools.cluster import free_port
from worker.storage.postgres.activity import ActivityRows
from worker.storage.postgres.connection import Database

pytest_plugins = ["pg"]  # pg_server, pg_url
pytestmark = pytest.mark.integration  # a PostgreSQL server process


def test_each_write_is_a_row_with_its_fields(pg_url):
    with Database(pg_url, name="test").open() as database:
        activity = ActivityRows(database, "host-a:7001")
        activity.write("enroll", "acme", speaker="alice", speech_seconds=4.2, samples=1, encoder="ecapa", ms=812.5)
        activity.write("verify", "acme", decision="alice", scores={"alice": 0.81, "bob": 0.12}, threshold=0.25)
        activity.write("delete_all", "other", count=2)
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT event, worker, account, fields, time <= now() FROM activity ORDER BY id").fetchall()
    assert rows == [
        ("enroll", "host-a:7001", "acme",
         {"speaker": "alice", "speech_seconds": 4.2, "samples": 1, "encoder": "ecapa", "ms": 812.5}, True),
        ("verify", "host-a:7001", "acme", {"decision": "alice", "scores": {"alice": 0.81, "bob": 0.12},
                                            "threshold": 0.25}, True),
        ("delete_all", "host-a:7001", "other", {"count": 2}, True),
    ]


def test_a_write_while_the_database_is_down_goes_to_the_log(caplog):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/voicestream"  # nothing listens there
    with Database(url, name="test").open(wait=10) as database:
        assert not database.up
        with caplog.at_level(logging.WARNING, logger="worker.database"):
            ActivityRows(database, "host-a:7001").write("delete", "acme", speaker="alice")
    assert any("activity row not written" in r.message and '"event":"delete"' in r.message
               and '"speaker":"alice"' in r.message for r in caplog.records)
