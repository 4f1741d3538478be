"""Spool: frame rows waiting on the worker's disk while the database is down.

One SQLite file per worker process (WAL; synchronous=FULL, as these rows may
be their frames' only record): a row is on disk before the frame is answered,
survives a restart, and leaves only once PostgreSQL holds it. A frame is in
the spool at most once (its key is unique here too). Bounded: past max_rows
new rows are dropped, counted and logged, so an outage cannot fill the disk.
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

log = logging.getLogger("worker.database")

# A frame row in the frames table's column order.
Row = tuple[str, str, int, int, int, int, int, str | None, float | None, str]
COLUMNS = ("account", "stream", "seq", "stamp", "voice", "worker", "ms", "speaker", "score", "host")
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
        self._lock = threading.Lock()
        self._count: int = self._conn.execute("SELECT count(*) FROM frame_rows").fetchone()[0]
        self.dropped = 0  # since this process started
        self._drop_logged = 0.0

    def __len__(self) -> int:
        return self._count

    def add(self, rows: Sequence[Row]) -> int:
        """Keep rows on disk (durably, before returning); returns how many were
        kept. Rows past max_rows are dropped; a row already here is not added
        twice."""
        with self._lock:
            keep = list(rows[:max(0, self.max_rows - self._count)])
            if keep:
                before = self._conn.total_changes
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(
                        f"INSERT OR IGNORE INTO frame_rows ({', '.join(COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(COLUMNS))})", keep)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._count += self._conn.total_changes - before
            dropped = len(rows) - len(keep)
            if dropped:
                self._dropped(dropped)
            return len(keep)

    def oldest(self, limit: int) -> list[tuple[int, Row]]:
        """Up to limit rows, oldest first, each with its spool id for remove()."""
        with self._lock:
            found = self._conn.execute(f"SELECT id, {', '.join(COLUMNS)} FROM frame_rows ORDER BY id LIMIT ?",
                                       (limit,)).fetchall()
        return [(row[0], tuple(row[1:])) for row in found]

    def remove(self, ids: Sequence[int]) -> None:
        """Forget rows the database now holds."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                removed = self._conn.executemany("DELETE FROM frame_rows WHERE id = ?", [(i,) for i in ids]).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._count -= removed

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            os.close(self._lock_fd)

    def _dropped(self, count: int) -> None:
        self.dropped += count
        now = time.monotonic()
        if now - self._drop_logged >= DROP_LOG_SECONDS:
            self._drop_logged = now
            log.error("spool %s is full (%d rows): dropped %d frame rows so far; they will be missing from the "
                      "database", self.path, self.max_rows, self.dropped)
