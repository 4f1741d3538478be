"""What only the PostgreSQL voiceprint store has, against a real server: its
own writes' notifications are not counted twice, and an outage answers the
storage protocol's StorageUnavailable until the database is back. The
behaviour both backends share: tests/test_voiceprint_stores.py."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import psycopg
import pytest

from worker.speakers.scoring import Roster
from worker.storage.postgres.connection import Database, DatabaseUnavailable
from worker.storage.postgres.voiceprints import PostgresVoiceprintStore
from worker.storage.protocol import StorageUnavailable
from worker.storage.voiceprints import EncoderId

pytest_plugins = ["pg"]  # pg_server, pg_url, own_pg
pytestmark = pytest.mark.integration  # a PostgreSQL server process

GE2E = EncoderId("ge2e", "39373b86598f", 4)


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.02)


@pytest.fixture
def database(pg_url) -> Iterator[Database]:
    with Database(pg_url, name="test-a").open() as database:
        assert database.up
        yield database


@pytest.fixture
def store(database) -> PostgresVoiceprintStore:
    return PostgresVoiceprintStore(database)


def test_the_notification_of_an_own_write_does_not_drop_the_cache_again(store, database, pg_url):
    # Notifications arrive in commit order: once a later one on another
    # channel has come, the store has heard its own enrollment's.
    sentinel = threading.Event()
    database.subscribe("test_sentinel", lambda notify: notify is not None and sentinel.set())
    roster = Roster(store)
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0)
    enrolled = roster.enrolled("acme", GE2E)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify('test_sentinel', '')")
    assert sentinel.wait(10)
    assert roster.enrolled("acme", GE2E) is enrolled


def test_an_outage_answers_unavailable_and_recovers(own_pg):
    with Database(own_pg.url, name="test-outage").open() as database:
        store = PostgresVoiceprintStore(database)
        store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0)
        own_pg.server.stop("immediate")
        # The first call finds the dead connection (or the LISTEN thread did).
        with pytest.raises(StorageUnavailable, match="database is unavailable") as raised:
            store.list("acme")
        assert isinstance(raised.value.__cause__, DatabaseUnavailable)  # this backend's own, handed on
        eventually(lambda: not database.up, "the database marked down")
        for call in (store.check_available, lambda: store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0),
                     lambda: store.get("acme", "alice"), lambda: store.delete("acme", "alice"),
                     lambda: store.delete_all("acme"), lambda: store.threshold("acme", "ge2e"),
                     lambda: store.set_threshold("acme", "ge2e", 0.8),
                     lambda: store.delete_threshold("acme", "ge2e")):
            with pytest.raises(StorageUnavailable, match="database is unavailable"):
                call()
        version = store.data_version()
        own_pg.server.start()
        eventually(lambda: database.up, "the database back up")
        # Notifications sent during the outage are lost: a reconnect counts as a change.
        assert store.data_version() != version
        assert [v.samples for v in store.list("acme")] == [1]


def test_other_database_errors_leave_as_storage_unavailable_too(store, pg_url):
    """Not an outage (the database stays up): an error of the statement
    itself, here a table gone, is still the protocol's one error."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TABLE voiceprints")
    with pytest.raises(StorageUnavailable, match="the database could not serve voiceprints") as raised:
        store.list("acme")
    assert isinstance(raised.value.__cause__, psycopg.errors.UndefinedTable)
    assert store.database.up
