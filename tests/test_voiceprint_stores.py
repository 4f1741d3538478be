"""The voiceprint store's behaviour, one suite run against both backends:
SQLite (a real file, one host) and PostgreSQL (a real server, --database).
"Another worker" is a second store on the same data - another
SqliteVoiceprintStore of the same file, or another Database connected to the
same PostgreSQL database - and its changes reach this store's data_version
(SQLite at once, PostgreSQL through NOTIFY within a second).

What only one backend has: tests/test_sqlite_store.py (WAL, schema upgrade,
its errors) and tests/test_database_voiceprints.py (notifications, outages)."""
from __future__ import annotations

import multiprocessing
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import psycopg
import pytest

from worker.speakers.scoring import Roster
from worker.storage.postgres.connection import Database
from worker.storage.postgres.voiceprints import PostgresVoiceprintStore
from worker.storage.protocol import VoiceprintStore
from worker.storage.sqlite import SqliteVoiceprintStore
from worker.storage.voiceprints import EncoderId, EncoderMismatch

pytest_plugins = ["pg"]  # pg_url, for the PostgreSQL backend

GE2E = EncoderId("ge2e", "39373b86598f", 4)
OTHER = EncoderId("ecapa", "aaaaaaaaaaaa", 4)
VOICEPRINT_COLUMNS = {"account", "name", "encoder", "model", "dim", "vector", "embedding_sum", "samples",
                      "speech_seconds", "created", "updated"}


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.02)


@dataclass
class Backend:
    name: str      # "sqlite" or "postgresql"
    location: str  # the file or the database URL every worker's store opens
    stack: ExitStack

    def open(self) -> VoiceprintStore:
        """A worker's store on this backend's data (closed after the test)."""
        if self.name == "sqlite":
            return SqliteVoiceprintStore(self.location)
        database = self.stack.enter_context(Database(self.location, name=f"test-{uuid.uuid4().hex[:8]}").open())
        assert database.up
        return PostgresVoiceprintStore(database)

    def columns(self, table: str) -> set[str]:
        if self.name == "sqlite":
            with sqlite3.connect(self.location) as conn:
                return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        with psycopg.connect(self.location) as conn:
            return {row[0] for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,))}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[Backend]:
    location = str(tmp_path / "vp.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    with ExitStack() as stack:
        yield Backend(request.param, location, stack)


@pytest.fixture
def store(backend: Backend) -> VoiceprintStore:
    return backend.open()


def test_the_store_keeps_no_audio(backend: Backend, store: VoiceprintStore):
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    assert backend.columns("voiceprints") == VOICEPRINT_COLUMNS


def test_enrollment_combines_samples_as_normalized_mean(store: VoiceprintStore):
    first = store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    assert first.samples == 1 and np.allclose(first.vector, [1, 0, 0, 0])
    # Not unit length on purpose: each sample counts once, whatever its norm.
    second = store.enroll("acme", "alice", GE2E, np.array([0, 5, 0, 0], np.float32), 3.5)
    assert second.samples == 2 and second.speech_seconds == pytest.approx(7.5)
    assert np.allclose(second.vector, unit(1, 1, 0, 0), atol=1e-6)
    assert second.created == first.created and second.updated >= first.updated
    again = store.get("acme", "alice")
    assert again is not None
    assert again.vector.dtype == np.float32 and np.allclose(again.vector, second.vector)
    assert again.encoder == GE2E and again.speech_seconds == pytest.approx(7.5)
    assert again.metadata()["samples"] == 2 and "vector" not in again.metadata()
    assert len(again.metadata(with_vector=True)["vector"]) == 4


def test_enrolling_with_another_encoder_is_refused(store: VoiceprintStore):
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    with pytest.raises(EncoderMismatch, match="made by encoder ge2e"):
        store.enroll("acme", "alice", OTHER, unit(0, 1, 0, 0), 4.0)
    again = store.get("acme", "alice")
    assert again is not None and again.samples == 1


def test_list_delete_and_accounts_are_separate(store: VoiceprintStore):
    for name in ("carol", "alice", "Bob", "bob"):
        store.enroll("acme", name, GE2E, unit(1, 2, 3, 4), 3.0)
    store.enroll("other", "alice", GE2E, unit(4, 3, 2, 1), 3.0)
    # Byte order, upper case first, whatever the database's collation.
    assert [v.name for v in store.list("acme")] == ["Bob", "alice", "bob", "carol"]
    assert store.get("acme", "dave") is None
    assert store.delete("acme", "bob") and not store.delete("acme", "bob")
    assert store.delete_all("acme") == 3 and store.delete_all("acme") == 0
    assert store.list("acme") == [] and store.get("other", "alice") is not None


def test_data_version_moves_on_this_stores_writes_at_once(store: VoiceprintStore):
    v0 = store.data_version()
    assert store.data_version() == v0  # nothing changed
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0)
    v1 = store.data_version()
    assert v1 != v0
    assert not store.delete("acme", "nobody")
    assert store.delete("acme", "alice")
    assert store.data_version() != v1


def test_another_workers_change_reaches_data_version(backend: Backend, store: VoiceprintStore):
    other = backend.open()
    for change in (lambda: other.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0),
                   lambda: other.delete("acme", "alice"),
                   lambda: other.enroll("acme", "bob", GE2E, unit(0, 1, 0, 0), 3.0),
                   lambda: other.delete_all("acme"),
                   lambda: other.set_threshold("acme", "ge2e", 0.8),
                   lambda: other.delete_threshold("acme", "ge2e")):
        before = store.data_version()
        change()
        eventually(lambda before=before: store.data_version() != before, "this store sees the other's change")


def test_roster_caches_until_the_store_changes(store: VoiceprintStore):
    roster = Roster(store)
    assert roster.enrolled("acme", GE2E) is None
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0)
    store.enroll("acme", "eve", OTHER, unit(0, 1, 0, 0), 3.0)  # another encoder: never scored
    enrolled = roster.enrolled("acme", GE2E)
    assert enrolled is not None and enrolled.names == ("alice",)
    assert roster.enrolled("acme", GE2E) is enrolled  # cached
    store.delete("acme", "alice")
    assert roster.enrolled("acme", GE2E) is None


def test_roster_drops_its_cache_when_another_worker_enrolls(backend: Backend, store: VoiceprintStore):
    roster = Roster(store)
    assert roster.enrolled("acme", GE2E) is None
    backend.open().enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0)
    eventually(lambda: roster.enrolled("acme", GE2E) is not None, "the roster sees another worker's enrollment")


def _enroll_many(backend: str, location: str, name: str, count: int) -> None:
    with ExitStack() as stack:
        store = Backend(backend, location, stack).open()
        rng = np.random.default_rng(sum(name.encode()))
        for _ in range(count):
            store.enroll("acme", name, GE2E, rng.normal(size=4).astype(np.float32), 1.0)
            store.enroll("acme", "shared", GE2E, rng.normal(size=4).astype(np.float32), 1.0)


def test_concurrent_enrollments_from_several_processes(backend: Backend, store: VoiceprintStore):
    ctx = multiprocessing.get_context("spawn")
    processes = [ctx.Process(target=_enroll_many, args=(backend.name, backend.location, f"speaker{i}", 25))
                 for i in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(180)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    # Every read-modify-write of "shared" counted, its first INSERT included:
    # none lost to a race.
    shared = store.get("acme", "shared")
    assert shared is not None and shared.samples == 100 and shared.speech_seconds == pytest.approx(100.0)
    assert [v.samples for v in store.list("acme") if v.name != "shared"] == [25, 25, 25, 25]


def test_an_account_threshold_is_per_encoder_kind(backend: Backend, store: VoiceprintStore):
    assert store.threshold("acme", "ge2e") is None
    v0 = store.data_version()
    saved = store.set_threshold("acme", "ge2e", 0.8)
    assert store.data_version() != v0  # this worker's Roster drops its cache at once
    other = backend.open()  # another worker reads what this one saved
    assert store.threshold("acme", "ge2e") == other.threshold("acme", "ge2e") == saved and saved.threshold == 0.8
    assert other.threshold("acme", "ecapa") is None and other.threshold("other", "ge2e") is None
    assert store.set_threshold("acme", "ge2e", 0.75).threshold == 0.75  # replaced, not added
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    assert store.delete_all("acme") == 1  # speakers only:
    kept = store.threshold("acme", "ge2e")
    assert kept is not None and kept.threshold == 0.75
    assert store.delete_threshold("acme", "ge2e") and not store.delete_threshold("acme", "ge2e")
    assert store.threshold("acme", "ge2e") is None


def test_the_roster_carries_the_account_threshold_and_follows_its_changes(backend: Backend,
                                                                         store: VoiceprintStore):
    roster = Roster(store)
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    first = roster.enrolled("acme", GE2E)
    assert first is not None and first.threshold is None
    other = backend.open()
    other.set_threshold("acme", "ge2e", 0.95)

    def threshold() -> float | None:
        enrolled = roster.enrolled("acme", GE2E)
        assert enrolled is not None
        return enrolled.threshold

    eventually(lambda: threshold() == 0.95, "the roster sees the other worker's threshold")
    before = store.data_version()
    other.set_threshold("acme", "ecapa", 0.3)
    eventually(lambda: store.data_version() != before, "this store sees the other's change")
    assert threshold() == 0.95  # the other kind's is not this encoder's
    store.delete_threshold("acme", "ge2e")
    assert threshold() is None
