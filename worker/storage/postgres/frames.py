"""FrameRows: every frame's result as one row of the shared database, exactly
once, whichever worker wrote it and however often it was retried; and each
frame's final speaker label in its row, with the segment it belongs to.

A row's key is (account, stream, seq): a retry - on this worker or another -
inserts nothing (ON CONFLICT DO NOTHING), and two balancer replicas' frames
never collide, as their streams differ. A batch is one statement, one round
trip: the rows go in as one JSON parameter and the same statement NOTIFYs
voicestream_frames once per account (voicestream-tail --follow listens).

A batch's final labels (rows.FinalLabel: a closed segment) travel in that same
statement: the segment becomes a row of the segments table (key (account,
stream, start_seq): applied twice, it is there once) and its frames' rows get
final_speaker and final_score - rows inserted by the statement itself with
them already (a statement's UPDATE does not see its own INSERT's rows), rows
stored earlier by an UPDATE of their seq range. The statement counts the rows
each label reached; a label that reached fewer than its segment's frames (its
rows are still in the spool, or another worker's insert of them had not
committed) goes to the spool, and the flusher applies it again once the spool
holds none of its rows. Applying a label again writes the same values.

record() returns only once the rows are durable - in PostgreSQL or, when it
is down or slower than --database-timeout, in the worker's spool file - so a
worker killed after answering loses nothing. A flusher thread moves spooled
rows to PostgreSQL when it is back (also rows spooled before a restart) and
deletes them from the spool only after they are committed there; then the
spooled labels whose rows are all out of the spool, oldest first.
"""
from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from voicestream.logline import stamp_line

from ..rows import FinalLabel, FrameRow
from .connection import Database, DatabaseUnavailable
from .notify import FRAMES_CHANNEL
from .spool import COLUMNS, LABEL_COLUMNS, Label, Row, Spool

log = logging.getLogger("worker.database")

# The rows travel as one JSON array of arrays: json.dumps (C) costs the worker
# a third less CPU than psycopg adapting ten typed arrays for unnest() -
# 73 against 109 us per one-frame batch, 13 against 20 us per frame in
# batches of 8 (record() on this 2-core machine, local PostgreSQL 15).
# A row's 11th and 12th values, when present, are its final label.
INSERT_ROWS = f"""
    INSERT INTO frames ({', '.join(COLUMNS)}, final_speaker, final_score)
    SELECT r->>0, r->>1, (r->>2)::bigint, (r->>3)::bigint, (r->>4)::smallint, (r->>5)::integer,
           (r->>6)::integer, r->>7, (r->>8)::real, r->>9, r->>10, (r->>11)::real
    FROM json_array_elements(%s::json) r
    ON CONFLICT DO NOTHING"""
INSERT = f"""
WITH ins AS ({INSERT_ROWS}
    RETURNING account)
SELECT pg_notify('{FRAMES_CHANNEL}', a) FROM (SELECT DISTINCT account AS a FROM ins) d"""
LABEL_TYPES = ("text", "text", "bigint", "bigint", "bigint", "bigint", "text", "real", "integer", "text")


@functools.cache
def insert_with_labels(count: int) -> str:
    """Rows and `count` final labels (spool.Label) in one statement; its one
    row is (accounts notified, the 1-based positions of the labels that
    reached fewer rows than their frames).

    The labels are a VALUES list, not JSON: the planner then knows they are
    few and reaches their rows through the primary key (EXPLAIN ANALYZE: an
    index scan). From JSON, estimated at 100 labels, it hashed them and
    scanned the whole frames table, a cost growing with the table: record()
    took 8.6 ms per one-frame batch with a label at 17,000 rows (on this
    2-core machine, busy with other work: the plan is the point)."""
    one = f"({{}}, {', '.join(f'%s::{kind}' for kind in LABEL_TYPES)})"
    values = ", ".join(one.format(n) for n in range(1, count + 1))
    return f"""
WITH ins AS ({INSERT_ROWS}
    RETURNING account, stream, seq, final_speaker),
labels (n, {', '.join(LABEL_COLUMNS)}) AS (VALUES {values}),
labelled AS (
    UPDATE frames f SET final_speaker = labels.speaker, final_score = labels.score
    FROM labels
    WHERE f.account = labels.account AND f.stream = labels.stream
      AND f.seq BETWEEN labels.start_seq AND labels.end_seq
    RETURNING labels.n),
segs AS (
    INSERT INTO segments ({', '.join(LABEL_COLUMNS)})
    SELECT {', '.join(LABEL_COLUMNS)} FROM labels
    ON CONFLICT DO NOTHING),
reached AS (
    SELECT n, count(*) AS c FROM (
        SELECT n FROM labelled
        UNION ALL
        SELECT labels.n FROM ins JOIN labels ON ins.account = labels.account AND ins.stream = labels.stream
            AND ins.seq BETWEEN labels.start_seq AND labels.end_seq
        WHERE ins.final_speaker IS NOT NULL) each
    GROUP BY n),
notified AS (
    SELECT pg_notify('{FRAMES_CHANNEL}', a) FROM (SELECT account AS a FROM ins UNION SELECT account FROM labels) d)
SELECT (SELECT count(*) FROM notified),
       ARRAY(SELECT labels.n FROM labels LEFT JOIN reached USING (n)
             WHERE coalesce(reached.c, 0) < labels.frames ORDER BY labels.n)"""


FLUSH_ROWS = 500            # rows per flush statement
FLUSH_LABELS = 100          # final labels per flush statement
FLUSH_TIMEOUT = 5.0         # seconds the flusher waits for a pooled connection
IDLE_CHECK_SECONDS = 1.0    # the flusher looks at the spool at least this often
# How long a spooled label whose rows are out of the spool is applied again
# while it still reaches fewer rows than its frames: another worker's insert
# of them commits within its statement timeout (--database-timeout).
LABEL_PATIENCE_SECONDS = 10.0
BIGINT = 2**63
INT = 2**31


def row_line(stamp: int, voice: int, worker: int, ms: float, speaker: str | None, score: float | None) -> str:
    """A frames row's log line: the same text as the worker's file holds."""
    return stamp_line(stamp, voice, worker, ms, speaker, score)


def stored_score(score: float | None) -> float | None:
    """A score as rows and segments keep it: rounded to 2 places, as the
    log line and the segments file show it."""
    return None if score is None else round(score, 2)


class FrameRows:
    """Usage: ``FrameRows(database, Spool(path, max_rows), host)``, then
    ``record(rows, finals)`` from request threads; ``health()`` for /health."""

    def __init__(self, database: Database, spool: Spool, host: str) -> None:
        self.database = database
        self.spool = spool
        self.host = host
        self.rejected = 0  # rows that could never be stored (a NUL in a string, a number out of range)
        self.rejected_labels = 0
        self._rejected_lock = threading.Lock()
        self._short_since: dict[int, float] = {}  # the flusher's: spooled label -> when it first came up short
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name=f"{database.name}-flush", daemon=True)
        self._flusher.start()

    def record(self, rows: Sequence[FrameRow], finals: Sequence[FinalLabel] = ()) -> None:
        """Store the rows and the final labels durably: one statement to
        PostgreSQL if it is up, else (or if that fails or takes longer than
        the database timeout) the spool; labels that found some of their rows
        missing go to the spool too. Raises only if the spool itself cannot
        be written (RowsNotStored)."""
        batch = [row for row in map(self._row, rows) if row is not None]
        labels = [label for label in map(self._label, finals) if label is not None]
        if not batch and not labels:
            return
        if self.database.up:
            # Labels already waiting in the spool go first: the labels of a
            # stream reach PostgreSQL in the order they were made.
            direct = labels if not self.spool.labels else []
            try:
                short = self._write(batch, direct) if batch or direct else []
            except DatabaseUnavailable:
                pass  # the database is marked down now
            except psycopg.Error as exc:  # e.g. a missing table: keep the rows until it is fixed
                log.error("frame rows could not be written: %s", exc)
                self.database.mark_down(exc)
            else:
                waiting = [direct[i] for i in short] if direct else labels
                if waiting:
                    self.spool.add([], waiting)
                    self._wake.set()
                return
        self.spool.add(batch, labels)
        self._wake.set()

    def health(self) -> dict[str, Any]:
        """/health's "database": mode, state, spooled and dropped frame rows,
        spooled and dropped final labels (and error while down)."""
        return {**self.database.health(), "spooled": len(self.spool), "dropped": self.spool.dropped + self.rejected,
                "spooled_finals": self.spool.labels,
                "dropped_finals": self.spool.dropped_labels + self.rejected_labels}

    def close(self) -> None:
        """Stop the flusher (spooled rows stay for the next start); the
        database and the spool are closed by their owner."""
        self._closed.set()
        self._wake.set()
        self._flusher.join(FLUSH_TIMEOUT + 10)

    def _write(self, batch: Sequence[Row], labels: Sequence[Label], timeout: float | None = None) -> list[int]:
        """One statement; the indices of the labels that reached fewer rows than their frames."""
        if not labels:
            with self.database.connection(timeout) as conn:
                conn.execute(INSERT, (json.dumps(batch, separators=(",", ":")),))
            return []
        rows = json.dumps(with_labels(batch, labels), separators=(",", ":"))
        with self.database.connection(timeout) as conn:
            found = conn.execute(insert_with_labels(len(labels)), (rows, *itertools.chain(*labels))).fetchone()
        return [] if found is None else [n - 1 for n in found[1]]

    def _row(self, row: FrameRow) -> Row | None:
        problem = _problem(row, self.host)
        if problem is None:
            return (row.account, row.stream, row.seq, row.stamp, row.voice, row.worker, round(row.ms), row.speaker,
                    stored_score(row.score), self.host)
        with self._rejected_lock:
            self.rejected += 1
        log.error("frame row not stored (%s): account %r stream %r seq %r", problem, str(row.account)[:64],
                  str(row.stream)[:64], row.seq)
        return None

    def _label(self, final: FinalLabel) -> Label | None:
        problem = _label_problem(final, self.host)
        if problem is None:
            return (final.account, final.stream, final.start_seq, final.end_seq, final.start, final.end,
                    final.speaker, stored_score(final.score), final.frames, self.host)
        with self._rejected_lock:
            self.rejected_labels += 1
        log.error("final label not stored (%s): account %r stream %r seqs %r-%r", problem, str(final.account)[:64],
                  str(final.stream)[:64], final.start_seq, final.end_seq)
        return None

    def _flush_loop(self) -> None:
        while not self._closed.is_set():
            self._wake.clear()
            if not len(self.spool) and not self.spool.labels:
                self._wake.wait(IDLE_CHECK_SECONDS)
                continue
            if not self.database.wait_up(IDLE_CHECK_SECONDS):
                continue
            try:
                moved = self._flush_rows()
                moved = self._flush_labels() or moved
            except DatabaseUnavailable:
                continue  # marked down: wait_up waits for the LISTEN thread's reconnect
            except psycopg.Error as exc:
                log.error("spooled frame rows or final labels could not be written: %s", exc)
                self.database.mark_down(exc)
                continue
            if not moved:  # only labels waiting for rows to show up: look again in a while
                self._wake.wait(IDLE_CHECK_SECONDS)

    def _flush_rows(self) -> bool:
        chunk = self.spool.oldest(FLUSH_ROWS)
        if not chunk:
            return False
        self._write([row for _, row in chunk], [], FLUSH_TIMEOUT)
        # Deleted only now: a crash before this line flushes them again,
        # and ON CONFLICT DO NOTHING makes that a no-op.
        self.spool.remove([spool_id for spool_id, _ in chunk])
        return True

    def _flush_labels(self) -> bool:
        """The oldest spooled labels none of whose rows are still spooled,
        applied; whether any left the spool."""
        if not self.spool.labels:
            return False
        ready: list[tuple[int, Label]] = []
        for spool_id, label in self.spool.oldest_labels(FLUSH_LABELS):
            if self.spool.holds_rows(label):
                break  # its rows go first; the labels after it wait with it, in order
            ready.append((spool_id, label))
        if not ready:
            return False
        short = set(self._write([], [label for _, label in ready], FLUSH_TIMEOUT))
        now = time.monotonic()
        done: list[int] = []
        for i, (spool_id, label) in enumerate(ready):
            if i in short:
                # Every row of it this worker stored is in PostgreSQL: the
                # others may be another worker's insert, committing moments
                # later. After LABEL_PATIENCE_SECONDS they never will be
                # (dropped from a full spool, or refused): applied as far as it went.
                if now - self._short_since.setdefault(spool_id, now) < LABEL_PATIENCE_SECONDS:
                    break  # it and the ones after it stay, in order (applied again, the same values)
                log.warning("final label of account %r stream %r seqs %d-%d reached fewer rows than its %d "
                            "frames: the others were never stored", label[0], label[1][:64], label[2], label[3],
                            label[8])
            self._short_since.pop(spool_id, None)
            done.append(spool_id)
        self.spool.remove_labels(done)
        return bool(done)


def with_labels(batch: Sequence[Row], labels: Sequence[Label]) -> list[Row | tuple[Any, ...]]:
    """The batch's rows, each that a label covers with that label's speaker
    and score appended (the statement's UPDATE cannot reach them)."""
    out: list[Row | tuple[Any, ...]] = []
    for row in batch:
        account, stream, seq = row[:3]
        for label in labels:
            if label[0] == account and label[1] == stream and label[2] <= seq <= label[3]:
                out.append((*row, label[6], label[7]))
                break
        else:
            out.append(row)
    return out


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


def _label_problem(final: FinalLabel, host: str) -> str | None:
    """Why PostgreSQL would refuse the final label (in the spool it would
    block the labels behind it)."""
    for name, text in (("account", final.account), ("stream", final.stream), ("speaker", final.speaker),
                       ("host", host)):
        if not (isinstance(text, str) and "\x00" not in text and _encodable(text)):
            return f"{name} is not a string without NULs and lone surrogates"
    integers = (final.start_seq, final.end_seq, final.start, final.end)
    if not all(type(n) is int and 0 <= n < BIGINT for n in integers):
        return "seqs and stamps must be non-negative 64-bit integers"
    if not (type(final.frames) is int and 0 < final.frames < INT):
        return "frames must be a positive integer"
    if final.score is not None and not math.isfinite(final.score):
        return "score is not finite"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
