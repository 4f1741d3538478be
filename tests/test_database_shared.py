"""SharedDatabase: a worker's PostgreSQL side assembled from its options, as
create_worker will call it."""
from __future__ import annotations

import socket

import numpy as np
import psycopg
import pytest

from voicetools.cluster import free_port
from worker.storage.postgres.shared import SharedDatabase, host_name, spool_path
from worker.storage.postgres.spool import SpoolInUse
from worker.storage.postgres.url import DatabaseUrlError
from worker.storage.rows import FrameRow
from worker.storage.voiceprints import EncoderId

pytest_plugins = ["pg"]  # pg_server, pg_url
pytestmark = pytest.mark.integration  # a PostgreSQL server process


def open_shared(url: str, spool_dir, port: int = 7001, host: str = "127.0.0.2") -> SharedDatabase:
    return SharedDatabase.open(url, timeout=0.5, spool_dir=spool_dir, spool_max_rows=1000, host=host, port=port)


def test_a_worker_keeps_voiceprints_activity_and_frames_in_postgresql(pg_url, tmp_path):
    shared = open_shared(pg_url, tmp_path / "spool")
    try:
        assert shared.health() == {"mode": "postgresql", "state": "up", "spooled": 0, "dropped": 0,
                                   "spooled_finals": 0, "dropped_finals": 0}
        shared.voiceprints.enroll("acme", "alice", EncoderId("ecapa", "m", 2), np.array([1, 0], np.float32), 3.0)
        shared.activity.write("enroll", "acme", speaker="alice")
        shared.frames.record([FrameRow("acme", "conn-1", 0, 1_674_222_284_123_435, 1, 7001, 3.0, "alice", 0.9)])
    finally:
        shared.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT account, name FROM voiceprints").fetchall() == [("acme", "alice")]
        assert conn.execute("SELECT worker FROM activity").fetchall() == [("127.0.0.2:7001",)]
        assert conn.execute("SELECT host, worker, speaker FROM frames").fetchall() == [("127.0.0.2", 7001, "alice")]
    assert spool_path(tmp_path / "spool", 7001).exists()


def test_each_worker_process_has_its_own_spool(pg_url, tmp_path):
    first = open_shared(pg_url, tmp_path)
    try:
        open_shared(pg_url, tmp_path, port=7002).close()  # another port: another file
        with pytest.raises(SpoolInUse, match="in use by another worker process"):
            open_shared(pg_url, tmp_path)
    finally:
        first.close()


def test_bad_settings_and_an_unreachable_database(tmp_path):
    with pytest.raises(DatabaseUrlError, match="port 'x'"):
        open_shared("postgresql://db.example:x/voice", tmp_path)
    shared = open_shared(f"postgresql://postgres@127.0.0.1:{free_port()}/voicestream", tmp_path)
    try:
        health = shared.health()
        assert (health["state"], health["spooled"]) == ("down", 0) and health["error"]
    finally:
        shared.close()


def test_rows_name_the_machine_when_the_worker_listens_everywhere():
    assert host_name("0.0.0.0") == host_name("::") == socket.gethostname()
    assert host_name("10.0.0.7") == "10.0.0.7"
