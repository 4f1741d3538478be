"""PostgresVoiceprintStore against a real PostgreSQL: the behaviours of the
SQLite store (tests/test_speaker_store.py), across processes and hosts, plus
what only a shared store has: another worker's change reaches this one's
data_version within a second, and an outage answers DatabaseUnavailable."""
from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import psycopg
import pytest

from worker.speakers.scoring import Roster
from worker.storage.postgres.connection import Database
from worker.storage.postgres.voiceprints import PostgresVoiceprintStore
from worker.storage.protocol import StorageUnavailable
from worker.storage.voiceprints import EncoderId, EncoderMismatch

pytest_plugins = ["pg"]  # pg_server, pg_url, own_pg
pytestmark = pytest.mark.integration  # a PostgreSQL server process

GE2E = EncoderId("ge2e", "39373b86598f", 4)
OTHER = EncoderId("ecapa", "aaaaaaaaaaaa", 4)


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


def test_the_store_keeps_no_audio(store, pg_url):
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    with psycopg.connect(pg_url) as conn:
        columns = {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'voiceprints'")}
    assert columns == {"account", "name", "encoder", "model", "dim", "vector", "embedding_sum", "samples",
                       "speech_seconds", "created", "updated"}


def test_enrollment_combines_samples_as_normalized_mean(store):
    first = store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    assert first.samples == 1 and np.allclose(first.vector, [1, 0, 0, 0])
    # Not unit length on purpose: each sample counts once, whatever its norm.
    second = store.enroll("acme", "alice", GE2E, np.array([0, 5, 0, 0], np.float32), 3.5)
    assert second.samples == 2 and second.speech_seconds == pytest.approx(7.5)
    assert np.allclose(second.vector, unit(1, 1, 0, 0), atol=1e-6)
    assert second.created == first.created and second.updated >= first.updated
    again = store.get("acme", "alice")
    assert again.vector.dtype == np.float32 and np.allclose(again.vector, second.vector)
    assert again.encoder == GE2E and again.speech_seconds == pytest.approx(7.5)
    assert again.metadata()["samples"] == 2 and "vector" not in again.metadata()
    assert len(again.metadata(with_vector=True)["vector"]) == 4


def test_enrolling_with_another_encoder_is_refused(store):
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    with pytest.raises(EncoderMismatch, match="made by encoder ge2e"):
        store.enroll("acme", "alice", OTHER, unit(0, 1, 0, 0), 4.0)
    assert store.get("acme", "alice").samples == 1


def test_list_delete_and_accounts_are_separate(store):
    for name in ("carol", "alice", "Bob", "bob"):
        store.enroll("acme", name, GE2E, unit(1, 2, 3, 4), 3.0)
    store.enroll("other", "alice", GE2E, unit(4, 3, 2, 1), 3.0)
    # Byte order, as SQLite's: upper case first, whatever the database's collation.
    assert [v.name for v in store.list("acme")] == ["Bob", "alice", "bob", "carol"]
    assert store.get("acme", "dave") is None
    assert store.delete("acme", "bob") and not store.delete("acme", "bob")
    assert store.delete_all("acme") == 3 and store.delete_all("acme") == 0
    assert store.list("acme") == [] and store.get("other", "alice") is not None


def test_data_version_moves_on_this_stores_writes_at_once(store):
    v0 = store.data_version()
    assert store.data_version() == v0  # nothing changed
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0)
    v1 = store.data_version()
    assert v1 != v0
    assert not store.delete("acme", "nobody")
    assert store.delete("acme", "alice")
    assert store.data_version() != v1


def test_another_workers_change_reaches_data_version(store, pg_url):
    # Two Database objects: two workers, as on two hosts. Each write of B is
    # seen by A through NOTIFY, not by A's own writes.
    with Database(pg_url, name="test-b").open() as other_database:
        other = PostgresVoiceprintStore(other_database)
        for change in (lambda: other.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0),
                       lambda: other.delete("acme", "alice"),
                       lambda: other.enroll("acme", "bob", GE2E, unit(0, 1, 0, 0), 3.0),
                       lambda: other.delete_all("acme")):
            before = store.data_version()
            change()
            eventually(lambda before=before: store.data_version() != before, "A sees B's change")


def _enroll_many(url: str, name: str, count: int) -> None:
    with Database(url, name=f"test-{name}").open() as database:
        store = PostgresVoiceprintStore(database)
        rng = np.random.default_rng(sum(name.encode()))
        for _ in range(count):
            store.enroll("acme", name, GE2E, rng.normal(size=4).astype(np.float32), 1.0)
            store.enroll("acme", "shared", GE2E, rng.normal(size=4).astype(np.float32), 1.0)


def test_concurrent_enrollments_from_several_processes(store, pg_url):
    ctx = multiprocessing.get_context("spawn")
    processes = [ctx.Process(target=_enroll_many, args=(pg_url, f"speaker{i}", 25)) for i in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(180)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    # Every read-modify-write of "shared" counted, the first INSERT included:
    # none lost to a race.
    assert store.get("acme", "shared").samples == 100
    assert store.get("acme", "shared").speech_seconds == pytest.approx(100.0)
    assert all(store.get("acme", f"speaker{i}").samples == 25 for i in range(4))


def test_roster_caches_until_the_store_changes(store):
    roster = Roster(store)
    assert roster.enrolled("acme", GE2E) is None
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0)
    store.enroll("acme", "eve", OTHER, unit(0, 1, 0, 0), 3.0)  # another encoder: never scored
    enrolled = roster.enrolled("acme", GE2E)
    assert enrolled.names == ("alice",)
    assert roster.enrolled("acme", GE2E) is enrolled  # cached
    store.delete("acme", "alice")
    assert roster.enrolled("acme", GE2E) is None


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


def test_roster_drops_its_cache_when_another_worker_enrolls(store, pg_url):
    roster = Roster(store)
    assert roster.enrolled("acme", GE2E) is None
    with Database(pg_url, name="test-b").open() as other_database:
        PostgresVoiceprintStore(other_database).enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0)
    eventually(lambda: roster.enrolled("acme", GE2E) is not None, "the roster sees another worker's enrollment")


def test_an_account_threshold_per_encoder_kind(store):
    assert store.threshold("acme", "ge2e") is None
    v0 = store.data_version()
    saved = store.set_threshold("acme", "ge2e", 0.8)
    assert store.data_version() != v0  # this worker's Roster drops its cache at once
    assert store.threshold("acme", "ge2e") == saved and saved.threshold == 0.8
    assert store.set_threshold("acme", "ge2e", 0.75).threshold == 0.75  # replaced
    assert store.threshold("acme", "ecapa") is None and store.threshold("other", "ge2e") is None
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0)
    assert store.delete_all("acme") == 1 and store.threshold("acme", "ge2e").threshold == 0.75  # speakers only
    assert store.delete_threshold("acme", "ge2e") and not store.delete_threshold("acme", "ge2e")
    assert store.threshold("acme", "ge2e") is None


def test_another_workers_threshold_reaches_the_roster(store, pg_url):
    roster = Roster(store)
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0)
    assert roster.enrolled("acme", GE2E).threshold is None
    with Database(pg_url, name="test-b").open() as other_database:
        other = PostgresVoiceprintStore(other_database)
        other.set_threshold("acme", "ge2e", 0.9)
        eventually(lambda: roster.enrolled("acme", GE2E).threshold == 0.9, "the roster sees B's threshold")
        other.delete_threshold("acme", "ge2e")
        eventually(lambda: roster.enrolled("acme", GE2E).threshold is None, "the roster sees B's deletion")


def test_an_outage_answers_unavailable_and_recovers(own_pg):
    with Database(own_pg.url, name="test-outage").open() as database:
        store = PostgresVoiceprintStore(database)
        store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0)
        own_pg.server.stop("immediate")
        # The first call finds the dead connection (or the LISTEN thread did).
        with pytest.raises(StorageUnavailable, match="database is unavailable"):
            store.list("acme")
        eventually(lambda: not database.up, "the database marked down")
        for call in (lambda: store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0),
                     lambda: store.get("acme", "alice"), lambda: store.delete("acme", "alice"),
                     lambda: store.delete_all("acme")):
            with pytest.raises(StorageUnavailable, match="database is unavailable"):
                call()
        version = store.data_version()
        own_pg.server.start()
        eventually(lambda: database.up, "the database back up")
        # Notifications sent during the outage are lost: a reconnect counts as a change.
        assert store.data_version() != version
        assert [v.samples for v in store.list("acme")] == [1]
