"""FrameRows: every frame's result as one row of the shared database, exactly
once, whichever worker wrote it and however often it was retried.

A row's key is (account, stream, seq): a retry - on this worker or another -
inserts nothing (ON CONFLICT DO NOTHING), and two balancer replicas' frames
never collide, as their streams differ. A batch is one statement, one round
trip: the rows go in as one JSON parameter and the same statement NOTIFYs
voicestream_frames once per account (voicestream-tail --follow listens).

record() returns only once the rows are durable - in PostgreSQL or, when it
is down or slower than --database-timeout, in the worker's spool file - so a
worker killed after answering loses nothing. A flusher thread moves spooled
rows to PostgreSQL when it is back (also rows spooled before a restart) and
deletes them from the spool only after they are committed there.
"""
from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import psycopg

from voicestream.logline import format_line
from voicestream.stamps import stamp_time

from ..rows import FinalLabel, FrameRow
from .connection import Database, DatabaseUnavailable
from .notify import FRAMES_CHANNEL
from .spool import COLUMNS, Row, Spool

log = logging.getLogger("worker.database")

# The rows travel as one JSON array of arrays: json.dumps (C) costs the worker
# a third less CPU than psycopg adapting ten typed arrays for unnest() -
# 73 against 109 us per one-frame batch, 13 against 20 us per frame in
# batches of 8 (record() on this 2-core machine, local PostgreSQL 15).
INSERT = f"""
WITH ins AS (
    INSERT INTO frames ({', '.join(COLUMNS)})
    SELECT r->>0, r->>1, (r->>2)::bigint, (r->>3)::bigint, (r->>4)::smallint, (r->>5)::integer,
           (r->>6)::integer, r->>7, (r->>8)::real, r->>9
    FROM json_array_elements(%s::json) r
    ON CONFLICT DO NOTHING
    RETURNING account)
SELECT pg_notify('{FRAMES_CHANNEL}', a) FROM (SELECT DISTINCT account AS a FROM ins) d"""
FLUSH_ROWS = 500            # rows per flush statement
FLUSH_TIMEOUT = 5.0         # seconds the flusher waits for a pooled connection
IDLE_CHECK_SECONDS = 1.0    # the flusher looks at the spool at least this often
BIGINT = 2**63
INT = 2**31


def row_line(stamp: int, voice: int, worker: int, ms: float, speaker: str | None, score: float | None) -> str:
    """A frames row's log line: the same text as the worker's file holds."""
    return format_line(stamp_time(stamp), voice, worker, ms, speaker, score)


class FrameRows:
    """Usage: ``FrameRows(database, Spool(path, max_rows), host)``, then
    ``record(rows)`` from request threads; ``health()`` for /health."""

    def __init__(self, database: Database, spool: Spool, host: str) -> None:
        self.database = database
        self.spool = spool
        self.host = host
        self.rejected = 0  # rows that could never be stored (a NUL in a string, a number out of range)
        self._rejected_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name=f"{database.name}-flush", daemon=True)
        self._flusher.start()

    def record(self, rows: Sequence[FrameRow], finals: Sequence[FinalLabel] = ()) -> None:
        """Store the rows durably: one statement to PostgreSQL if it is up,
        else (or if that fails or takes longer than the database timeout) the
        spool. Raises only if the spool itself cannot be written.
        FINALS: not stored yet (issue 15's PostgreSQL part)."""
        batch = [row for row in map(self._row, rows) if row is not None]
        if not batch:
            return
        if self.database.up:
            try:
                self._insert(batch)
                return
            except DatabaseUnavailable:
                pass  # the database is marked down now
            except psycopg.Error as exc:  # e.g. a missing table: keep the rows until it is fixed
                log.error("frame rows could not be written: %s", exc)
                self.database.mark_down(exc)
        self.spool.add(batch)
        self._wake.set()

    def health(self) -> dict[str, Any]:
        """/health's "database": mode, state, spooled, dropped (and error while down)."""
        return {**self.database.health(), "spooled": len(self.spool), "dropped": self.spool.dropped + self.rejected}

    def close(self) -> None:
        """Stop the flusher (spooled rows stay for the next start); the
        database and the spool are closed by their owner."""
        self._closed.set()
        self._wake.set()
        self._flusher.join(FLUSH_TIMEOUT + 10)

    def _insert(self, batch: Sequence[Row], timeout: float | None = None) -> None:
        rows = json.dumps(batch, separators=(",", ":"))
        with self.database.connection(timeout) as conn:
            conn.execute(INSERT, (rows,))

    def _row(self, row: FrameRow) -> Row | None:
        problem = _problem(row, self.host)
        if problem is None:
            return (row.account, row.stream, row.seq, row.stamp, row.voice, row.worker, round(row.ms), row.speaker,
                    None if row.score is None else round(row.score, 2), self.host)
        with self._rejected_lock:
            self.rejected += 1
        log.error("frame row not stored (%s): account %r stream %r seq %r", problem, str(row.account)[:64],
                  str(row.stream)[:64], row.seq)
        return None

    def _flush_loop(self) -> None:
        while not self._closed.is_set():
            self._wake.clear()
            if not len(self.spool):
                self._wake.wait(IDLE_CHECK_SECONDS)
                continue
            if not self.database.wait_up(IDLE_CHECK_SECONDS):
                continue
            chunk = self.spool.oldest(FLUSH_ROWS)
            try:
                self._insert([row for _, row in chunk], FLUSH_TIMEOUT)
            except DatabaseUnavailable:
                continue  # marked down: wait_up waits for the LISTEN thread's reconnect
            except psycopg.Error as exc:
                log.error("spooled frame rows could not be written: %s", exc)
                self.database.mark_down(exc)
                continue
            # Deleted only now: a crash before this line flushes them again,
            # and ON CONFLICT DO NOTHING makes that a no-op.
            self.spool.remove([spool_id for spool_id, _ in chunk])


def _problem(row: FrameRow, host: str) -> str | None:
    """Why PostgreSQL would refuse the row (in the spool it would block the
    rows behind it)."""
    for name, text in (("account", row.account), ("stream", row.stream), ("speaker", row.speaker), ("host", host)):
        if text is not None and not (isinstance(text, str) and "\x00" not in text and _encodable(text)):
            return f"{name} is not a string without NULs and lone surrogates"
    integers = (row.seq, row.stamp, row.voice, row.worker)
    if not all(type(n) is int for n in integers) or not (0 <= row.seq < BIGINT and 0 <= row.stamp < BIGINT):
        return "seq and stamp must be non-negative 64-bit integers"
    if not (-(2**15) <= row.voice < 2**15 and -INT <= row.worker < INT):
        return "voice or worker out of range"
    if not (math.isfinite(row.ms) and -INT < row.ms < INT):
        return "ms is not a finite number in range"
    if row.score is not None and not math.isfinite(row.score):
        return "score is not finite"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
