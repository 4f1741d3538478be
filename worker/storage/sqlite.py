"""SqliteVoiceprintStore: the embedded voiceprint store, one SQLite file (WAL
mode) shared by every worker process of a host. The types and the
arithmetic of a voiceprint are voiceprints.py's, shared with the PostgreSQL
backend.

sqlite3's errors (a file locked past the busy timeout, a disk gone, a file
that is not a store) leave as StorageUnavailable, the protocol's one error:
frames then go on without speakers, the speaker API answers 503.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import numpy as np

from .protocol import StorageUnavailable
from .voiceprints import (
    STORED_COLUMNS,
    AccountThreshold,
    EncoderId,
    Voiceprint,
    add_sample,
    blob_vector,
    now_text,
    vector_blob,
)

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
COLUMNS = "account, name, encoder, model, dim, vector, samples, speech_seconds, created, updated"

S = TypeVar("S", bound="SqliteVoiceprintStore")
P = ParamSpec("P")
R = TypeVar("R")


def unavailable(path: Path, exc: sqlite3.Error) -> StorageUnavailable:
    return StorageUnavailable(f"the voiceprint store {path} cannot be used ({exc.__class__.__name__}: {exc})")


def storage_errors(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """The store's method, raising StorageUnavailable for sqlite3's errors."""
    @wraps(method)
    def call(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise unavailable(self.path, exc) from exc
    return call


class SqliteVoiceprintStore:
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
        """A local file: always there (its errors show on use, as StorageUnavailable)."""

    def data_version(self) -> int:
        """Changes whenever any other connection committed: a cheap way to
        know cached voiceprints are stale."""
        # Read on every frame of an account with speakers: no wrapper call.
        try:
            with self._watch_lock:
                return self._watch.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise unavailable(self.path, exc) from exc

    @storage_errors
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

    @storage_errors
    def get(self, account: str, name: str) -> Voiceprint | None:
        row = self._conn().execute(f"SELECT {COLUMNS} FROM voiceprints WHERE account = ? AND name = ?",
                                   (account, name)).fetchone()
        return None if row is None else self._voiceprint(row)

    @storage_errors
    def list(self, account: str) -> list[Voiceprint]:
        rows = self._conn().execute(f"SELECT {COLUMNS} FROM voiceprints WHERE account = ? ORDER BY name",
                                    (account,)).fetchall()
        return [self._voiceprint(row) for row in rows]

    @storage_errors
    def delete(self, account: str, name: str) -> bool:
        cur = self._conn().execute("DELETE FROM voiceprints WHERE account = ? AND name = ?", (account, name))
        return cur.rowcount > 0

    @storage_errors
    def delete_all(self, account: str) -> int:
        return self._conn().execute("DELETE FROM voiceprints WHERE account = ?", (account,)).rowcount

    @storage_errors
    def threshold(self, account: str, encoder: str) -> AccountThreshold | None:
        row = self._conn().execute("SELECT threshold, updated FROM account_settings WHERE account = ? AND encoder = ?",
                                   (account, encoder)).fetchone()
        return None if row is None else AccountThreshold(account, encoder, row[0], row[1])

    @storage_errors
    def set_threshold(self, account: str, encoder: str, threshold: float) -> AccountThreshold:
        # A commit: data_version moves, so every Roster (this process's and
        # other workers') drops its cached decisions' inputs.
        saved = AccountThreshold(account, encoder, float(threshold), now_text())
        self._conn().execute("INSERT OR REPLACE INTO account_settings (account, encoder, threshold, updated) "
                             "VALUES (?, ?, ?, ?)", (account, encoder, saved.threshold, saved.updated))
        return saved

    @storage_errors
    def delete_threshold(self, account: str, encoder: str) -> bool:
        cur = self._conn().execute("DELETE FROM account_settings WHERE account = ? AND encoder = ?",
                                   (account, encoder))
        return cur.rowcount > 0

    @staticmethod
    def _voiceprint(row: tuple) -> Voiceprint:
        account, name, enc, model, dim, blob, samples, seconds, created, updated = row
        return Voiceprint(account, name, EncoderId(enc, model, dim), blob_vector(blob, dim),
                          samples, seconds, created, updated)
