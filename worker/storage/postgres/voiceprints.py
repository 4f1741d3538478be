"""PostgresVoiceprintStore: the storage protocol's VoiceprintStore on
PostgreSQL, for workers on several hosts. Same methods and semantics as the
SQLite store, the same Voiceprint/EncoderId/EncoderMismatch/AccountThreshold
(an account's own threshold is read with its voiceprints, so it NOTIFYs like
them). While the database is down, and for any other error of psycopg or its
pool, every method raises the protocol's StorageUnavailable (the speaker API
answers 503, frames go on without speakers).

Only embeddings and their metadata are stored, never audio.

data_version() is what the Roster polls on every frame, so it reads a
counter. It moves on this store's own commits at once, and on every other
worker's within a second - each enroll and delete NOTIFYs
voicestream_voiceprints and the LISTEN thread counts the notifications - and
whenever LISTEN begins (at start and when the database comes back:
notifications sent before are lost). The notification of an own commit,
which arrives a little later, is recognised by its backend's pid and not
counted again: it would drop the Roster's cache twice per write.
"""
from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Concatenate, ParamSpec, TypeVar

import numpy as np
import psycopg
from psycopg import Notify

from ..protocol import StorageUnavailable
from ..voiceprints import (
    STORED_COLUMNS,
    AccountThreshold,
    EncoderId,
    Voiceprint,
    add_sample,
    blob_vector,
    now_text,
    vector_blob,
)
from .connection import Database, DatabaseUnavailable, describe
from .notify import VOICEPRINTS_CHANNEL

# pg_advisory_xact_lock(VOICEPRINT_LOCKS, hashtext(account/name)): enrollments
# of one speaker take turns (the first sample's INSERT has no row to lock).
VOICEPRINT_LOCKS = 0x7670  # "vp"
# Writes may wait behind another worker's enrollment of the same speaker: a
# longer limit than the frames' statement timeout.
WRITE_TIMEOUT = "10s"
COLUMNS = "account, name, encoder, model, dim, vector, samples, speech_seconds, created, updated"
# The voiceprint saved and the other workers told, in one statement.
UPSERT = """
WITH saved AS (
    INSERT INTO voiceprints (account, name, encoder, model, dim, vector, embedding_sum, samples, speech_seconds,
                             created, updated)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (account, name) DO UPDATE SET
        encoder = excluded.encoder, model = excluded.model, dim = excluded.dim, vector = excluded.vector,
        embedding_sum = excluded.embedding_sum, samples = excluded.samples,
        speech_seconds = excluded.speech_seconds, updated = excluded.updated
    RETURNING account)
SELECT pg_notify(%s, account) FROM saved"""
SET_THRESHOLD = """
WITH saved AS (
    INSERT INTO account_settings (account, encoder, threshold, updated) VALUES (%s, %s, %s, %s)
    ON CONFLICT (account, encoder) DO UPDATE SET threshold = excluded.threshold, updated = excluded.updated
    RETURNING account)
SELECT pg_notify(%s, account) FROM saved"""


S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")


def storage_errors(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """The store's method, raising StorageUnavailable for the database being
    down and for any other error of psycopg or its pool."""
    @wraps(method)
    def call(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except DatabaseUnavailable as exc:
            raise StorageUnavailable(str(exc)) from exc
        except psycopg.Error as exc:
            raise StorageUnavailable(f"the database could not serve voiceprints ({describe(exc)})") from exc
    return call


class _Write:
    notified = False  # set once the write committed with its NOTIFY


class PostgresVoiceprintStore:
    """Thread-safe: each call takes a pooled connection."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._versions = itertools.count(1)
        self._version = 0
        self._own = Counter[int]()  # backend pid -> own writes whose NOTIFY has not come back yet
        self._lock = threading.Lock()
        database.subscribe(VOICEPRINTS_CHANNEL, self._notified)

    def check_available(self) -> None:
        """Raises StorageUnavailable while the database is down."""
        if not self.database.up:
            raise StorageUnavailable(str(self.database.unavailable()))

    def data_version(self) -> int:
        """Changes whenever voiceprints may have changed, on any worker."""
        return self._version

    def _notified(self, notify: Notify | None) -> None:
        with self._lock:
            if notify is not None and self._own[notify.pid] > 0:
                self._own[notify.pid] -= 1  # ours: counted when it committed
                return
            if notify is None:  # LISTEN (re)started: what was pending will not come
                self._own.clear()
            self._version = next(self._versions)

    @contextmanager
    def _write(self, conn: psycopg.Connection) -> Iterator[_Write]:
        """Around one write: the version moves when it ends, and its NOTIFY -
        registered before it can arrive - will not move it again."""
        pid = conn.info.backend_pid
        write = _Write()
        with self._lock:
            self._own[pid] += 1
        try:
            yield write
        finally:
            with self._lock:
                if not write.notified and self._own[pid] > 0:
                    self._own[pid] -= 1
                self._version = next(self._versions)

    @storage_errors
    def enroll(self, account: str, name: str, encoder: EncoderId, embedding: np.ndarray,
               speech_seconds: float) -> Voiceprint:
        """Add one sample's embedding to the speaker's voiceprint (creating it).
        Raises EncoderMismatch if the voiceprint was made by another encoder."""
        with self.database.connection() as conn, self._write(conn) as write:
            with conn.transaction():
                voiceprint = self._enroll(conn, account, name, encoder, embedding, speech_seconds)
            write.notified = True  # committed, NOTIFY included
        return voiceprint

    @staticmethod
    def _enroll(conn: psycopg.Connection, account: str, name: str, encoder: EncoderId, embedding: np.ndarray,
                speech_seconds: float) -> Voiceprint:
        conn.execute(f"SET LOCAL statement_timeout = '{WRITE_TIMEOUT}'")
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (VOICEPRINT_LOCKS, f"{account}/{name}"))
        # A statement of its own after the lock: its snapshot sees what the
        # previous holder committed.
        row = conn.execute(f"SELECT {STORED_COLUMNS} FROM voiceprints WHERE account = %s AND name = %s",
                           (account, name)).fetchone()
        v = add_sample(row, encoder, embedding, speech_seconds, name)
        conn.execute(UPSERT, (account, name, encoder.name, encoder.model, encoder.dim, vector_blob(v.vector),
                              vector_blob(v.total), v.samples, v.speech_seconds, v.created, v.updated,
                              VOICEPRINTS_CHANNEL))
        return Voiceprint(account, name, encoder, v.vector, v.samples, v.speech_seconds, v.created, v.updated)

    @storage_errors
    def get(self, account: str, name: str) -> Voiceprint | None:
        with self.database.connection() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM voiceprints WHERE account = %s AND name = %s",
                               (account, name)).fetchone()
        return None if row is None else _voiceprint(row)

    @storage_errors
    def list(self, account: str) -> list[Voiceprint]:
        with self.database.connection() as conn:
            rows = conn.execute(f"SELECT {COLUMNS} FROM voiceprints WHERE account = %s ORDER BY name COLLATE \"C\"",
                                (account,)).fetchall()
        return [_voiceprint(row) for row in rows]

    @storage_errors
    def delete(self, account: str, name: str) -> bool:
        return self._delete("account = %s AND name = %s", (account, name)) > 0

    @storage_errors
    def delete_all(self, account: str) -> int:
        return self._delete("account = %s", (account,))

    @storage_errors
    def threshold(self, account: str, encoder: str) -> AccountThreshold | None:
        with self.database.connection() as conn:
            row = conn.execute("SELECT threshold, updated FROM account_settings WHERE account = %s AND encoder = %s",
                               (account, encoder)).fetchone()
        return None if row is None else AccountThreshold(account, encoder, float(row[0]), row[1])

    @storage_errors
    def set_threshold(self, account: str, encoder: str, threshold: float) -> AccountThreshold:
        saved = AccountThreshold(account, encoder, float(threshold), now_text())
        with self.database.connection() as conn, self._write(conn) as write:
            conn.execute(SET_THRESHOLD, (account, encoder, saved.threshold, saved.updated, VOICEPRINTS_CHANNEL))
            write.notified = True
        return saved

    @storage_errors
    def delete_threshold(self, account: str, encoder: str) -> bool:
        return self._delete("account = %s AND encoder = %s", (account, encoder), "account_settings") > 0

    def _delete(self, where: str, params: tuple[str, ...], table: str = "voiceprints") -> int:
        # One statement: the rows go and, if any went, the other workers hear of it.
        with self.database.connection() as conn, self._write(conn) as write:
            row = conn.execute(
                f"WITH gone AS (DELETE FROM {table} WHERE {where} RETURNING 1) "
                "SELECT n, CASE WHEN n > 0 THEN pg_notify(%s, %s) END FROM (SELECT count(*) AS n FROM gone) c",
                (*params, VOICEPRINTS_CHANNEL, params[0])).fetchone()
            count = int(row[0]) if row is not None else 0
            write.notified = count > 0
        return count


def _voiceprint(row: tuple) -> Voiceprint:
    account, name, enc, model, dim, blob, samples, seconds, created, updated = row
    return Voiceprint(account, name, EncoderId(enc, model, dim), blob_vector(bytes(blob), dim),
                      samples, seconds, created, updated)
