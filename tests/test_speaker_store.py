"""The SQLite voiceprint store (real files, real processes) and the pure parts
of streaming verification: the rolling speech window and the decision."""
from __future__ import annotations

import multiprocessing
import sqlite3
import threading

import numpy as np
import pytest

from worker.speakers.scoring import UNKNOWN, Enrolled, Roster, decide
from worker.storage.sqlite import SqliteVoiceprintStore as VoiceprintStore
from worker.storage.voiceprints import EncoderId, EncoderMismatch

GE2E = EncoderId("ge2e", "39373b86598f", 4)
OTHER = EncoderId("ecapa", "aaaaaaaaaaaa", 4)


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


def test_store_is_wal_and_keeps_no_audio(tmp_path):
    store = VoiceprintStore(tmp_path / "vp.db")
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    conn = sqlite3.connect(tmp_path / "vp.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    columns = {row[1] for row in conn.execute("PRAGMA table_info(voiceprints)")}
    assert columns == {"account", "name", "encoder", "model", "dim", "vector", "embedding_sum", "samples",
                       "speech_seconds", "created", "updated"}


def test_enrollment_combines_samples_as_normalized_mean(tmp_path):
    store = VoiceprintStore(tmp_path / "vp.db")
    first = store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    assert first.samples == 1 and np.allclose(first.vector, [1, 0, 0, 0])
    # Not unit length on purpose: each sample counts once, whatever its norm.
    second = store.enroll("acme", "alice", GE2E, np.array([0, 5, 0, 0], np.float32), 3.5)
    assert second.samples == 2 and second.speech_seconds == pytest.approx(7.5)
    assert np.allclose(second.vector, unit(1, 1, 0, 0), atol=1e-6)
    assert second.created == first.created and second.updated >= first.updated
    again = store.get("acme", "alice")
    assert again.vector.dtype == np.float32 and np.allclose(again.vector, second.vector)
    assert again.metadata()["samples"] == 2 and "vector" not in again.metadata()
    assert len(again.metadata(with_vector=True)["vector"]) == 4


def test_enrolling_with_another_encoder_is_refused(tmp_path):
    store = VoiceprintStore(tmp_path / "vp.db")
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    with pytest.raises(EncoderMismatch, match="made by encoder ge2e"):
        store.enroll("acme", "alice", OTHER, unit(0, 1, 0, 0), 4.0)
    assert store.get("acme", "alice").samples == 1


def test_list_delete_and_accounts_are_separate(tmp_path):
    store = VoiceprintStore(tmp_path / "vp.db")
    for name in ("carol", "alice", "bob"):
        store.enroll("acme", name, GE2E, unit(1, 2, 3, 4), 3.0)
    store.enroll("other", "alice", GE2E, unit(4, 3, 2, 1), 3.0)
    assert [v.name for v in store.list("acme")] == ["alice", "bob", "carol"]
    assert store.delete("acme", "bob") and not store.delete("acme", "bob")
    assert store.delete_all("acme") == 2
    assert store.list("acme") == [] and store.get("other", "alice") is not None


def test_data_version_sees_writes_of_other_threads_and_processes(tmp_path):
    store = VoiceprintStore(tmp_path / "vp.db")
    v0 = store.data_version()
    assert store.data_version() == v0  # nothing changed
    thread = threading.Thread(target=store.enroll, args=("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0))
    thread.start()
    thread.join()
    v1 = store.data_version()
    assert v1 != v0
    process = multiprocessing.get_context("spawn").Process(target=_enroll_many,
                                                           args=(str(tmp_path / "vp.db"), "bob", 1))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert store.data_version() != v1


def test_roster_caches_until_the_store_changes(tmp_path):
    store = VoiceprintStore(tmp_path / "vp.db")
    roster = Roster(store)
    assert roster.enrolled("acme", GE2E) is None
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 3.0)
    store.enroll("acme", "eve", OTHER, unit(0, 1, 0, 0), 3.0)  # another encoder: never scored
    enrolled = roster.enrolled("acme", GE2E)
    assert enrolled.names == ("alice",)
    assert roster.enrolled("acme", GE2E) is enrolled  # cached
    store.delete("acme", "alice")
    assert roster.enrolled("acme", GE2E) is None


def _enroll_many(path: str, name: str, count: int) -> None:
    store = VoiceprintStore(path)
    rng = np.random.default_rng(sum(name.encode()))
    for _ in range(count):
        store.enroll("acme", name, GE2E, rng.normal(size=4).astype(np.float32), 1.0)
        store.enroll("acme", "shared", GE2E, rng.normal(size=4).astype(np.float32), 1.0)


def test_concurrent_enrollments_from_several_processes(tmp_path):
    path = str(tmp_path / "vp.db")
    VoiceprintStore(path)
    ctx = multiprocessing.get_context("spawn")
    processes = [ctx.Process(target=_enroll_many, args=(path, f"speaker{i}", 25)) for i in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    store = VoiceprintStore(path)
    # Every read-modify-write of "shared" counted: none lost to a race.
    assert store.get("acme", "shared").samples == 100
    assert store.get("acme", "shared").speech_seconds == pytest.approx(100.0)
    assert all(store.get("acme", f"speaker{i}").samples == 25 for i in range(4))


# --- streaming window and decision (pure) --------------------------------------

def frame(value: float = 0.1, n: int = 1600) -> np.ndarray:
    return np.full(n, value, np.float32)


def test_decision_picks_the_best_speaker_above_threshold_else_unknown():
    enrolled = Enrolled(("alice", "bob", "carol"), np.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0), unit(0, 0, 1, 0)]))
    near_bob = unit(0.1, 1, 0.2, 0)
    d = decide(enrolled, near_bob, threshold=0.7)
    assert d.speaker == "bob" and d.best == "bob" and d.score == pytest.approx(float(near_bob[1]))
    assert set(d.scores) == {"alice", "bob", "carol"}
    between = unit(1, 1, 1, 0)
    d = decide(enrolled, between, threshold=0.7)
    assert d.speaker == UNKNOWN and d.score == pytest.approx(1 / np.sqrt(3), abs=1e-6)


def test_an_account_threshold_is_per_encoder_kind_and_moves_the_data_version(tmp_path):
    store = VoiceprintStore(tmp_path / "vp.db")
    other = VoiceprintStore(tmp_path / "vp.db")  # another worker on the same file
    assert store.threshold("acme", "ge2e") is None
    before = other.data_version()
    saved = store.set_threshold("acme", "ge2e", 0.8)
    assert other.data_version() != before  # every Roster drops its cache
    assert other.threshold("acme", "ge2e") == saved and saved.threshold == 0.8
    assert other.threshold("acme", "ecapa") is None and other.threshold("other", "ge2e") is None
    assert store.set_threshold("acme", "ge2e", 0.75).threshold == 0.75  # replaced, not added
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    assert store.delete_all("acme") == 1 and store.threshold("acme", "ge2e") is not None  # speakers only
    assert store.delete_threshold("acme", "ge2e") and not store.delete_threshold("acme", "ge2e")
    assert store.threshold("acme", "ge2e") is None


def test_a_store_of_schema_version_1_gains_the_settings_table(tmp_path):
    path = tmp_path / "vp.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE voiceprints (account TEXT NOT NULL, name TEXT NOT NULL, encoder TEXT NOT NULL, "
                       "model TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL, embedding_sum BLOB NOT NULL, "
                       "samples INTEGER NOT NULL, speech_seconds REAL NOT NULL, created TEXT NOT NULL, "
                       "updated TEXT NOT NULL, PRIMARY KEY (account, name)) WITHOUT ROWID; PRAGMA user_version = 1;")
    conn.close()
    store = VoiceprintStore(path)
    assert store.set_threshold("acme", "ge2e", 0.72).threshold == 0.72
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


def test_the_roster_carries_the_account_threshold_and_follows_its_changes(tmp_path):
    store = VoiceprintStore(tmp_path / "vp.db")
    roster = Roster(store)
    store.enroll("acme", "alice", GE2E, unit(1, 0, 0, 0), 4.0)
    first = roster.enrolled("acme", GE2E)
    assert first is not None and first.threshold is None
    VoiceprintStore(tmp_path / "vp.db").set_threshold("acme", "ge2e", 0.95)  # another worker
    assert roster.enrolled("acme", GE2E).threshold == 0.95
    VoiceprintStore(tmp_path / "vp.db").set_threshold("acme", "ecapa", 0.3)
    assert roster.enrolled("acme", GE2E).threshold == 0.95  # the other kind's is not this encoder's
    store.delete_threshold("acme", "ge2e")
    assert roster.enrolled("acme", GE2E).threshold is None


def test_the_account_threshold_overrides_the_workers_in_the_decision():
    matrix = np.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0)])
    near_alice = unit(1, 0.5, 0, 0)  # 0.894 to alice
    assert decide(Enrolled(("alice", "bob"), matrix), near_alice, threshold=0.7).speaker == "alice"
    strict = Enrolled(("alice", "bob"), matrix, threshold=0.95)
    assert decide(strict, near_alice, threshold=0.7).speaker == UNKNOWN
    lenient = Enrolled(("alice", "bob"), matrix, threshold=0.5)
    assert decide(lenient, near_alice, threshold=0.99).speaker == "alice"


def test_a_margin_names_only_a_speaker_clear_of_the_second_best():
    enrolled = Enrolled(("alice", "bob"), np.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0)]))
    between = unit(1, 0.9, 0, 0)  # 0.743 to alice, 0.669 to bob: 0.074 apart
    assert decide(enrolled, between, threshold=0.7).speaker == "alice"
    assert decide(enrolled, between, threshold=0.7, margin=0.07).speaker == "alice"
    held = decide(enrolled, between, threshold=0.7, margin=0.08)
    assert held.speaker == UNKNOWN and held.best == "alice"
    alone = Enrolled(("alice",), unit(1, 0, 0, 0)[None])
    assert decide(alone, between, threshold=0.7, margin=0.5).speaker == "alice"  # nobody to be clear of
