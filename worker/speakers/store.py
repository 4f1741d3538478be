"""Voiceprint store: one SQLite file (WAL mode) shared by every worker process.

Only embeddings and their metadata are stored, never audio: voiceprints are
biometric data, and the embedding is all verification needs.

A voiceprint combines every sample enrolled for a speaker: it keeps the sum of
the samples' unit embeddings (so later samples can be added) and its
normalized direction, the vector that is scored.

An account may also set its own decision threshold per encoder kind
(account_settings): a GE2E score and an ECAPA score live on different scales,
so a threshold set while one encoder served means nothing to the other.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS voiceprints (
    account        TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    encoder        TEXT    NOT NULL,  -- encoder kind: ecapa | ge2e
    model          TEXT    NOT NULL,  -- fingerprint of the encoder's weights
    dim            INTEGER NOT NULL,
    vector         BLOB    NOT NULL,  -- float32[dim], unit length: what is scored
    embedding_sum  BLOB    NOT NULL,  -- float32[dim], sum of the samples' unit embeddings
    samples        INTEGER NOT NULL,
    speech_seconds REAL    NOT NULL,
    created        TEXT    NOT NULL,
    updated        TEXT    NOT NULL,
    PRIMARY KEY (account, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS account_settings (
    account   TEXT NOT NULL,
    encoder   TEXT NOT NULL,  -- encoder kind the threshold is for: ecapa | ge2e
    threshold REAL NOT NULL,  -- cosine score a speaker must reach, instead of the worker's
    updated   TEXT NOT NULL,
    PRIMARY KEY (account, encoder)
) WITHOUT ROWID;
"""
BUSY_TIMEOUT_SECONDS = 30.0


class EncoderMismatch(ValueError):
    """A voiceprint and an embedding come from different encoders."""


@dataclass(frozen=True)
class EncoderId:
    name: str
    model: str
    dim: int

    def __str__(self) -> str:
        return f"{self.name} (model {self.model}, dim {self.dim})"


@dataclass(frozen=True)
class Voiceprint:
    account: str
    name: str
    encoder: EncoderId
    vector: np.ndarray
    samples: int
    speech_seconds: float
    created: str
    updated: str

    def metadata(self, with_vector: bool = False) -> dict:
        meta = {"name": self.name, "encoder": self.encoder.name, "model": self.encoder.model,
                "dim": self.encoder.dim, "samples": self.samples,
                "speech_seconds": round(self.speech_seconds, 2), "created": self.created, "updated": self.updated}
        if with_vector:
            meta["vector"] = [round(float(v), 7) for v in self.vector]
        return meta


@dataclass(frozen=True)
class AccountThreshold:
    """An account's own decision threshold for one encoder kind."""
    account: str
    encoder: str
    threshold: float
    updated: str


def check_same_encoder(voiceprint_encoder: EncoderId, encoder: EncoderId, what: str) -> None:
    if voiceprint_encoder != encoder:
        raise EncoderMismatch(f"{what} was made by encoder {voiceprint_encoder}, not {encoder}: "
                              "scores across encoders mean nothing; delete it and enroll again with this encoder")


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def vector_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def blob_vector(blob: bytes, dim: int) -> np.ndarray:
    vector = np.frombuffer(blob, dtype="<f4")
    if len(vector) != dim:
        raise ValueError(f"stored vector has {len(vector)} values, expected {dim}")
    return vector.astype(np.float32)


# What add_sample needs of a stored voiceprint, in this order (both stores select it).
STORED_COLUMNS = "encoder, model, dim, embedding_sum, samples, speech_seconds, created"


@dataclass(frozen=True)
class Updated:
    """A voiceprint after one more enrolled sample."""
    vector: np.ndarray  # unit length: what is scored
    total: np.ndarray   # sum of the samples' unit embeddings
    samples: int
    speech_seconds: float
    created: str
    updated: str


def add_sample(stored: Sequence[Any] | None, encoder: EncoderId, embedding: np.ndarray, speech_seconds: float,
               name: str) -> Updated:
    """The voiceprint with one more sample: stored is its row (STORED_COLUMNS),
    None for a new speaker. Raises EncoderMismatch for another encoder's."""
    unit = embedding.astype(np.float64) / max(float(np.linalg.norm(embedding)), 1e-12)
    now = now_text()
    if stored is None:
        total, samples, seconds, created = unit, 1, speech_seconds, now
    else:
        check_same_encoder(EncoderId(stored[0], stored[1], stored[2]), encoder, f"voiceprint {name!r}")
        total = blob_vector(bytes(stored[3]), stored[2]).astype(np.float64) + unit
        samples, seconds, created = stored[4] + 1, stored[5] + speech_seconds, stored[6]
    vector = (total / max(float(np.linalg.norm(total)), 1e-12)).astype(np.float32)
    return Updated(vector, total, samples, seconds, created, now)


class StoreUnavailable(RuntimeError):
    """The voiceprint store cannot be reached (the shared database is down);
    the message says why, for a 503."""


class Voiceprints(Protocol):
    """What the speaker service and the streaming roster need of a store:
    VoiceprintStore (SQLite, one host) or worker/database's
    PostgresVoiceprintStore (--database, every host)."""

    def enroll(self, account: str, name: str, encoder: EncoderId, embedding: np.ndarray,
               speech_seconds: float) -> Voiceprint: ...

    def get(self, account: str, name: str) -> Voiceprint | None: ...

    def list(self, account: str) -> list[Voiceprint]: ...

    def delete(self, account: str, name: str) -> bool: ...

    def delete_all(self, account: str) -> int: ...

    def threshold(self, account: str, encoder: str) -> AccountThreshold | None:
        """The account's own threshold for encoder kind `encoder`, if it set one."""
        ...

    def set_threshold(self, account: str, encoder: str, threshold: float) -> AccountThreshold: ...

    def delete_threshold(self, account: str, encoder: str) -> bool: ...

    def data_version(self) -> int:
        """Moves whenever voiceprints changed anywhere: cached ones are stale."""
        ...

    def check_available(self) -> None:
        """Raises StoreUnavailable when the store is known to be down, so a
        request is refused before any work is done for it."""
        ...


class VoiceprintStore:
    """Thread-safe: each thread gets its own connection. Safe across
    processes: SQLite's locks with a busy timeout serialize writers, and every
    read-modify-write runs in one IMMEDIATE transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._init_schema()
        # Never writes, so its data_version moves on every commit by any other
        # connection: this process's request threads and other workers alike.
        self._watch = self._connect(check_same_thread=False)
        self._watch_lock = threading.Lock()

    def _connect(self, check_same_thread: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                               check_same_thread=check_same_thread)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode, far fewer fsyncs
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _init_schema(self) -> None:
        conn = self._connect()
        try:
            # Several workers start at once; switching to WAL takes an
            # exclusive lock that the busy handler does not always wait for.
            deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
            while True:
                try:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    time.sleep(0.05)
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"{self.path}: could not switch to WAL mode (got {mode})")
        finally:
            conn.close()

    def check_available(self) -> None:
        """A local file: always there (errors show on use)."""

    def data_version(self) -> int:
        """Changes whenever any other connection committed: a cheap way to
        know cached voiceprints are stale."""
        with self._watch_lock:
            return self._watch.execute("PRAGMA data_version").fetchone()[0]

    def enroll(self, account: str, name: str, encoder: EncoderId, embedding: np.ndarray,
               speech_seconds: float) -> Voiceprint:
        """Add one sample's embedding to the speaker's voiceprint (creating it).
        Raises EncoderMismatch if the voiceprint was made by another encoder."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(f"SELECT {STORED_COLUMNS} FROM voiceprints WHERE account = ? AND name = ?",
                               (account, name)).fetchone()
            v = add_sample(row, encoder, embedding, speech_seconds, name)
            conn.execute(
                "INSERT OR REPLACE INTO voiceprints (account, name, encoder, model, dim, vector, embedding_sum, "
                "samples, speech_seconds, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (account, name, encoder.name, encoder.model, encoder.dim, vector_blob(v.vector), vector_blob(v.total),
                 v.samples, v.speech_seconds, v.created, v.updated))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return Voiceprint(account, name, encoder, v.vector, v.samples, v.speech_seconds, v.created, v.updated)

    def get(self, account: str, name: str) -> Voiceprint | None:
        row = self._conn().execute(
            "SELECT account, name, encoder, model, dim, vector, samples, speech_seconds, created, updated "
            "FROM voiceprints WHERE account = ? AND name = ?", (account, name)).fetchone()
        return None if row is None else self._voiceprint(row)

    def list(self, account: str) -> list[Voiceprint]:
        rows = self._conn().execute(
            "SELECT account, name, encoder, model, dim, vector, samples, speech_seconds, created, updated "
            "FROM voiceprints WHERE account = ? ORDER BY name", (account,)).fetchall()
        return [self._voiceprint(row) for row in rows]

    def delete(self, account: str, name: str) -> bool:
        cur = self._conn().execute("DELETE FROM voiceprints WHERE account = ? AND name = ?", (account, name))
        return cur.rowcount > 0

    def delete_all(self, account: str) -> int:
        return self._conn().execute("DELETE FROM voiceprints WHERE account = ?", (account,)).rowcount

    def threshold(self, account: str, encoder: str) -> AccountThreshold | None:
        row = self._conn().execute("SELECT threshold, updated FROM account_settings WHERE account = ? AND encoder = ?",
                                   (account, encoder)).fetchone()
        return None if row is None else AccountThreshold(account, encoder, row[0], row[1])

    def set_threshold(self, account: str, encoder: str, threshold: float) -> AccountThreshold:
        # A commit: data_version moves, so every Roster (this process's and
        # other workers') drops its cached decisions' inputs.
        saved = AccountThreshold(account, encoder, float(threshold), now_text())
        self._conn().execute("INSERT OR REPLACE INTO account_settings (account, encoder, threshold, updated) "
                             "VALUES (?, ?, ?, ?)", (account, encoder, saved.threshold, saved.updated))
        return saved

    def delete_threshold(self, account: str, encoder: str) -> bool:
        cur = self._conn().execute("DELETE FROM account_settings WHERE account = ? AND encoder = ?",
                                   (account, encoder))
        return cur.rowcount > 0

    @staticmethod
    def _voiceprint(row: tuple) -> Voiceprint:
        account, name, enc, model, dim, blob, samples, seconds, created, updated = row
        return Voiceprint(account, name, EncoderId(enc, model, dim), blob_vector(blob, dim),
                          samples, seconds, created, updated)
