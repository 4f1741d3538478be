"""What only the SQLite voiceprint store has (real files, real processes):
WAL, a schema upgrade, one watch connection that sees every other thread's
and process's commit, and sqlite3's errors leaving as StorageUnavailable.
The behaviour both backends share: tests/test_voiceprint_stores.py."""
from __future__ import annotations

import multiprocessing
import sqlite3
import threading

import numpy as np
import pytest

from worker.storage.protocol import StorageUnavailable
from worker.storage.sqlite import SqliteVoiceprintStore
from worker.storage.voiceprints import EncoderId

GE2E = EncoderId("ge2e", "39373b86598f", 4)


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


def test_store_is_wal(tmp_path):
    store = SqliteVoiceprintStore(tmp_path / "vp.db")
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    conn = sqlite3.connect(tmp_path / "vp.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _enroll(path: str, name: str) -> None:
    SqliteVoiceprintStore(path).enroll("acme", name, GE2E, unit(0, 1, 0, 0), 1.0)


def test_data_version_sees_writes_of_other_threads_and_processes(tmp_path):
    store = SqliteVoiceprintStore(tmp_path / "vp.db")
    v0 = store.data_version()
    assert store.data_version() == v0  # nothing changed
    # This store's own write from another request thread: its own connection.
    thread = threading.Thread(target=store.enroll, args=("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0))
    thread.start()
    thread.join()
    v1 = store.data_version()
    assert v1 != v0
    process = multiprocessing.get_context("spawn").Process(target=_enroll, args=(str(tmp_path / "vp.db"), "bob"))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert store.data_version() != v1


def test_a_store_of_schema_version_1_gains_the_settings_table(tmp_path):
    path = tmp_path / "vp.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE voiceprints (account TEXT NOT NULL, name TEXT NOT NULL, encoder TEXT NOT NULL, "
                       "model TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL, embedding_sum BLOB NOT NULL, "
                       "samples INTEGER NOT NULL, speech_seconds REAL NOT NULL, created TEXT NOT NULL, "
                       "updated TEXT NOT NULL, PRIMARY KEY (account, name)) WITHOUT ROWID; PRAGMA user_version = 1;")
    conn.close()
    store = SqliteVoiceprintStore(path)
    assert store.set_threshold("acme", "ge2e", 0.72).threshold == 0.72
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


def test_sqlite_errors_leave_as_storage_unavailable(tmp_path):
    """The protocol's one error, naming the file and what SQLite said: the
    tracker and the speaker API catch no sqlite3 error of their own."""
    path = tmp_path / "vp.db"
    store = SqliteVoiceprintStore(path)
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    with sqlite3.connect(path) as conn:  # a file that stopped being a whole store
        conn.executescript("DROP TABLE voiceprints; DROP TABLE account_settings;")
    calls = {"enroll": lambda: store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0),
             "get": lambda: store.get("acme", "alice"), "list": lambda: store.list("acme"),
             "delete": lambda: store.delete("acme", "alice"), "delete_all": lambda: store.delete_all("acme"),
             "threshold": lambda: store.threshold("acme", "ge2e"),
             "set_threshold": lambda: store.set_threshold("acme", "ge2e", 0.8),
             "delete_threshold": lambda: store.delete_threshold("acme", "ge2e")}
    for name, call in calls.items():
        with pytest.raises(StorageUnavailable, match=f"the voiceprint store {path} cannot be used "
                                                     r"\(OperationalError: no such table: \w+\)") as raised:
            call()
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError), name
    store.check_available()  # a local file: refused call by call, never ahead of one
