"""Spool: frame rows waiting on the worker's disk while the database is down,
and the final labels (segments) waiting for PostgreSQL to hold their rows.

One SQLite file per worker process (WAL; synchronous=FULL, as these rows may
be their frames' only record): a row is on disk before the frame is answered,
survives a restart, and leaves only once PostgreSQL holds it; a spool that
cannot be written (its disk full) raises RowsNotStored, and those frames are
answered with that error, not ok. A frame is in
the spool at most once (its key is unique here too), and so is a segment.
Bounded: past max_rows new rows (and past max_rows final labels, new labels)
are dropped, counted and logged, so an outage cannot fill the disk.
"""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..protocol import RowsNotStored

log = logging.getLogger("worker.database")

# A frame row in the frames table's column order.
Row = tuple[str, str, int, int, int, int, int, str | None, float | None, str]
COLUMNS = ("account", "stream", "seq", "stamp", "voice", "worker", "ms", "speaker", "score", "host")
# A final label (rows.FinalLabel, with the host that made it final) in the
# segments table's column order.
Label = tuple[str, str, int, int, int, int, str, float | None, int, str]
LABEL_COLUMNS = ("account", "stream", "start_seq", "end_seq", "start_stamp", "end_stamp", "speaker", "score", "frames",
                 "host")
SCHEMA = """
CREATE TABLE IF NOT EXISTS frame_rows (
    id      INTEGER PRIMARY KEY,  -- spool order
    account TEXT    NOT NULL,
    stream  TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    stamp   INTEGER NOT NULL,
    voice   INTEGER NOT NULL,
    worker  INTEGER NOT NULL,
    ms      INTEGER NOT NULL,
    speaker TEXT,
    score   REAL,
    host    TEXT    NOT NULL,
    UNIQUE (account, stream, seq)
)"""
LABELS_SCHEMA = """
CREATE TABLE IF NOT EXISTS final_labels (
    id          INTEGER PRIMARY KEY,  -- spool order: labels are applied in it
    account     TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    start_seq   INTEGER NOT NULL,
    end_seq     INTEGER NOT NULL,
    start_stamp INTEGER NOT NULL,
    end_stamp   INTEGER NOT NULL,
    speaker     TEXT    NOT NULL,
    score       REAL,
    frames      INTEGER NOT NULL,
    host        TEXT    NOT NULL,
    UNIQUE (account, stream, start_seq)
)"""
DROP_LOG_SECONDS = 10.0  # one warning per this while rows are being dropped


class SpoolInUse(RuntimeError):
    """Another process has this spool file open."""


class Spool:
    """Thread-safe; one process at a time (an flock on <path>.lock, released
    by the kernel if the process dies)."""

    def __init__(self, path: str | os.PathLike, max_rows: int) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolInUse(f"spool {self.path} is in use by another worker process: "
                             "give each worker its own spool file") from None
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute(SCHEMA)
        self._conn.execute(LABELS_SCHEMA)  # a spool file from before final labels gets the table too
        self._lock = threading.Lock()
        self._count: int = self._conn.execute("SELECT count(*) FROM frame_rows").fetchone()[0]
        self._labels: int = self._conn.execute("SELECT count(*) FROM final_labels").fetchone()[0]
        self.dropped = 0  # rows, since this process started
        self.dropped_labels = 0
        self._drop_logged = 0.0

    def __len__(self) -> int:
        """Frame rows waiting."""
        return self._count

    @property
    def labels(self) -> int:
        """Final labels waiting."""
        return self._labels

    def add(self, rows: Sequence[Row], labels: Sequence[Label] = ()) -> int:
        """Keep rows and final labels on disk (durably, in one transaction,
        before returning); returns how many rows were kept. Rows (labels)
        past max_rows are dropped; one already here is not added twice."""
        with self._lock:
            keep = list(rows[:max(0, self.max_rows - self._count)])
            keep_labels = list(labels[:max(0, self.max_rows - self._labels)])
            if keep or keep_labels:
                try:
                    added, added_labels = self._insert(keep, keep_labels)
                except sqlite3.Error as exc:
                    # A full disk (SQLITE_FULL) or a broken file: nothing of
                    # the transaction is kept, and the frames are not answered ok.
                    raise RowsNotStored(f"the database did not take the frame rows and the spool cannot be "
                                        f"written: {exc}",
                                        full=getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL) from exc
                self._count += added
                self._labels += added_labels
            dropped, dropped_labels = len(rows) - len(keep), len(labels) - len(keep_labels)
            if dropped or dropped_labels:
                self._dropped(dropped, dropped_labels)
            return len(keep)

    def _insert(self, rows: Sequence[Row], labels: Sequence[Label]) -> tuple[int, int]:
        """One transaction (under self._lock): the rows and labels added."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            before = self._conn.total_changes
            self._conn.executemany(
                f"INSERT OR IGNORE INTO frame_rows ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})", rows)
            added = self._conn.total_changes - before
            self._conn.executemany(
                f"INSERT OR IGNORE INTO final_labels ({', '.join(LABEL_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(LABEL_COLUMNS))})", labels)
            added_labels = self._conn.total_changes - before - added
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:  # SQLite may have rolled a failed one back already (SQLITE_FULL)
                self._conn.execute("ROLLBACK")
            raise
        return added, added_labels

    def oldest(self, limit: int) -> list[tuple[int, Row]]:
        """Up to limit rows, oldest first, each with its spool id for remove()."""
        return self._oldest("frame_rows", COLUMNS, limit)

    def remove(self, ids: Sequence[int]) -> None:
        """Forget rows the database now holds."""
        with self._lock:
            self._count -= self._delete("frame_rows", ids)

    def oldest_labels(self, limit: int) -> list[tuple[int, Label]]:
        """Up to limit final labels, oldest first, each with its spool id for remove_labels()."""
        return self._oldest("final_labels", LABEL_COLUMNS, limit)

    def holds_rows(self, label: Label) -> bool:
        """Whether any frame row the label names is still here."""
        account, stream, start_seq, end_seq = label[:4]
        with self._lock:
            return self._conn.execute("SELECT 1 FROM frame_rows WHERE account = ? AND stream = ? AND seq BETWEEN ? "
                                      "AND ? LIMIT 1", (account, stream, start_seq, end_seq)).fetchone() is not None

    def remove_labels(self, ids: Sequence[int]) -> None:
        """Forget final labels the database now holds."""
        with self._lock:
            self._labels -= self._delete("final_labels", ids)

    def _oldest(self, table: str, columns: Sequence[str], limit: int) -> list[tuple[int, Any]]:
        with self._lock:
            found = self._conn.execute(f"SELECT id, {', '.join(columns)} FROM {table} ORDER BY id LIMIT ?",
                                       (limit,)).fetchall()
        return [(row[0], tuple(row[1:])) for row in found]

    def _delete(self, table: str, ids: Sequence[int]) -> int:
        """Deletes ids from table in one transaction; how many went. Under the lock."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            removed: int = self._conn.executemany(f"DELETE FROM {table} WHERE id = ?", [(i,) for i in ids]).rowcount
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return removed

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            os.close(self._lock_fd)

    def _dropped(self, rows: int, labels: int) -> None:
        self.dropped += rows
        self.dropped_labels += labels
        now = time.monotonic()
        if now - self._drop_logged >= DROP_LOG_SECONDS:
            self._drop_logged = now
            log.error("spool %s is full (%d rows, or %d final labels): dropped %d frame rows and %d final labels "
                      "so far; they will be missing from the database", self.path, self.max_rows, self.max_rows,
                      self.dropped, self.dropped_labels)
