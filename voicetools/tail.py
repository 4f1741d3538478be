"""Print an account's frame lines from the shared PostgreSQL, in the exact
per-account log format, ordered by frame time, one per frame - whichever
hosts processed them:

    .venv/bin/voicestream-tail ACCOUNT --database postgresql://voice@db/voicestream
    .venv/bin/voicestream-tail ACCOUNT --follow      # URL from DATABASE_URL; Ctrl-C to stop
    .venv/bin/voicestream-tail ACCOUNT --final       # the final speaker labels in place of the immediate
    .venv/bin/voicestream-tail ACCOUNT --segments    # the segments, as the segments files list them

--follow then prints new lines as they are committed: it LISTENs on
voicestream_frames (each batch notifies its accounts, and so do its final
labels) and re-checks every RECHECK_SECONDS in case a notification was
missed. New rows are found by id with a look-back: ids are handed out before
commit, so a row can become visible after rows with higher ids (see Follower).

--final prints each frame's line with its final label (--speaker-lag-ms of
look-ahead) in place of the immediate one, and no speaker for a frame that
has none: an unvoiced frame, an account without enrolled speakers, a frame
whose tracker restarted (a failover) before its label was final. Without
--follow a frame whose label is not final yet (the last second or so of a
live stream) is printed without a speaker too. With --follow such a frame
waits (and the frames after it, to keep the order) until its label comes,
or until FINAL_WAIT_SECONDS of frame time or of waiting have passed without
one (then it gets none): each frame is printed once, with its final label.

--segments prints the account's segments (the segments table) in the
segments file's format (voicestream/segments.py), ordered by their end;
--follow adds new ones as they are committed.

Exit status 2, with one line on stderr, when the URL is malformed, the
database unreachable or not a voicestream database.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from voicestream.accounts import invalid_account_message, is_valid_account
from voicestream.segments import format_segment
from worker.storage.postgres.frames import row_line
from worker.storage.postgres.notify import FRAMES_CHANNEL
from worker.storage.postgres.segments import segment_line
from worker.storage.postgres.url import DatabaseUrlError, check_url, redact

PROG = "voicestream-tail"

# A row's id is taken when its INSERT runs and becomes visible at commit; a
# worker's insert is one statement under a statement timeout (--database-
# timeout, 0.5 s by default), so a row commits within seconds of its id.
# The look-back is that bound, with a wide margin.
LOOKBACK_SECONDS = 10.0
# At start there is no id reading LOOKBACK_SECONDS old yet: look back this
# many ids instead (ids handed out to all accounts in LOOKBACK_SECONDS).
STARTUP_LOOKBACK_IDS = 200_000
RECHECK_SECONDS = 2.0      # a query even without a notification
RECONNECT_SECONDS = 1.0
DUMP_ROWS = 5000           # rows fetched per round trip while printing the history
# --final --follow: how long a voiced frame waits for its final label. A label
# comes at most --speaker-lag-ms (1 s) after its frame while the stream goes
# on (later from a spool, after an outage), so a frame still without one this
# much frame time or waiting time later will not get one.
FINAL_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class Query:
    """What a Follower reads: the rows of one account of a table with an id
    column, each as a tuple starting with its id."""
    table: str
    columns: str
    order: str


LINES = Query("frames", "id, stamp, voice, worker, ms, speaker, score", "ORDER BY stamp, stream, seq")
FINAL_LINES = Query("frames", "id, stamp, voice, worker, ms, final_speaker, final_score, stream, seq",
                    "ORDER BY stamp, stream, seq")
SEGMENTS = Query("segments", "id, start_stamp, end_stamp, speaker, score, start_seq, end_seq, frames, stream",
                 'ORDER BY end_stamp, stream COLLATE "C", start_seq')


class TailError(Exception):
    """What stops the tail, as one line for stderr."""


def connect(url: str) -> psycopg.Connection:
    try:
        extra: dict[str, Any] = {} if "connect_timeout" in url else {"connect_timeout": 5}
        return psycopg.connect(url, autocommit=True, application_name="voicestream tail", **extra)
    except psycopg.OperationalError as exc:
        raise TailError(f"cannot connect to the database {redact(url)}: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class Follower:
    """Finds the rows of an account committed since the last look, each once.

    Each query asks for ids above a bound. A row not seen by the previous
    query (taken at time t) committed after t, so its id was handed out
    after t - LOOKBACK_SECONDS: it is above the highest id handed out at that
    earlier time. The bound is the latest such reading of the id sequence;
    ids above it already printed are remembered and skipped."""

    def __init__(self, conn: psycopg.Connection, account: str, query: Query = LINES) -> None:
        self.conn = conn
        self.account = account
        self.query = query
        self.readings: deque[tuple[float, int]] = deque()  # (when, highest id handed out by then)
        self.printed: set[int] = set()
        self.bound = 0
        self.last_query = 0.0
        self._sequence: sql.Composed | None = None

    def last_id(self) -> int:
        """The highest id of the table handed out so far, committed or not."""
        if self._sequence is None:
            row = self.conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", (self.query.table,)).fetchone()
            if row is None or row[0] is None:
                raise TailError(f"the {self.query.table} table has no id sequence: not a voicestream database")
            self._sequence = sql.SQL("SELECT last_value, is_called FROM {}").format(
                sql.Identifier(*row[0].split(".")))
        found = self.conn.execute(self._sequence).fetchone()
        return int(found[0]) if found is not None and found[1] else 0

    def history(self) -> Iterator[tuple[Any, ...]]:
        """Every row of the account so far, in the query's order."""
        before = time.monotonic()
        highest = self.last_id()
        self.readings.append((before - LOOKBACK_SECONDS, max(0, highest - STARTUP_LOOKBACK_IDS)))
        self.readings.append((time.monotonic(), highest))
        self.last_query = time.monotonic()
        floor = self.readings[0][1]
        with self.conn.transaction(), self.conn.cursor(name="tail_history") as cur:
            cur.itersize = DUMP_ROWS
            cur.execute(f"SELECT {self.query.columns} FROM {self.query.table} WHERE account = %s {self.query.order}",
                        (self.account,))
            for row in cur:
                if row[0] > floor:
                    self.printed.add(row[0])
                yield row

    def new_rows(self) -> list[tuple[Any, ...]]:
        """Rows committed since the last call (or history()), in the query's order."""
        started = time.monotonic()
        while len(self.readings) > 1 and self.readings[1][0] <= self.last_query - LOOKBACK_SECONDS:
            self.readings.popleft()
        if self.readings[0][0] <= self.last_query - LOOKBACK_SECONDS and self.readings[0][1] > self.bound:
            self.bound = self.readings[0][1]
            self.printed = {i for i in self.printed if i > self.bound}
        highest = self.last_id()
        self.readings.append((time.monotonic(), highest))
        self.last_query = started
        rows = self.conn.execute(f"SELECT {self.query.columns} FROM {self.query.table} WHERE account = %s AND id > %s "
                                 f"{self.query.order}", (self.account, self.bound)).fetchall()
        new = []
        for row in rows:
            if row[0] not in self.printed:
                self.printed.add(row[0])
                new.append(row)
        return new


@dataclass
class Held:
    """A --final --follow frame row waiting for its final label."""
    row: tuple[Any, ...]  # FINAL_LINES' columns
    seen: float           # when the tail first read it (monotonic)

    @property
    def key(self) -> tuple[int, str, int]:
        return self.row[1], self.row[7], self.row[8]  # stamp, stream, seq: the printing order


@dataclass
class FinalLines:
    """--final --follow: frame lines printed once each, with their final
    labels, in frame order. A voiced frame without a final label holds back
    itself and the frames after it until its label is read, or until a frame
    FINAL_WAIT_SECONDS newer was read, or FINAL_WAIT_SECONDS passed since it
    was read: then it is printed without a speaker."""
    held: list[Held] = field(default_factory=list)
    newest: int = 0  # the newest frame stamp read

    def add(self, rows: Sequence[tuple[Any, ...]]) -> None:
        now = time.monotonic()
        self.held += [Held(row, now) for row in rows]
        self.newest = max([self.newest, *(row[1] for row in rows)])

    def refresh(self, conn: psycopg.Connection, account: str) -> None:
        """Read the labels that came for the frames waiting for one."""
        waiting = {held.row[0]: held for held in self.held if not settled(held.row)}
        if not waiting:
            return
        found = conn.execute("SELECT id, final_speaker, final_score FROM frames WHERE account = %s AND id = ANY(%s) "
                             "AND final_speaker IS NOT NULL", (account, list(waiting))).fetchall()
        for row_id, speaker, score in found:
            held = waiting[row_id]
            held.row = (*held.row[:5], speaker, score, *held.row[7:])

    def ready(self) -> list[str]:
        """The lines that can be printed now, in frame order."""
        self.held.sort(key=lambda held: held.key)
        now, lines = time.monotonic(), []
        for held in self.held:
            waited = now - held.seen >= FINAL_WAIT_SECONDS or self.newest - held.row[1] >= FINAL_WAIT_SECONDS * 1e6
            if not (settled(held.row) or waited):
                break
            lines.append(frame_line(held.row))
        del self.held[:len(lines)]
        return lines


def settled(row: tuple[Any, ...]) -> bool:
    """A FINAL_LINES row whose line will not change: it has its final label,
    or it is unvoiced (no segment holds an unvoiced frame)."""
    return row[5] is not None or row[2] == 0


def frame_line(row: tuple[Any, ...]) -> str:
    """A LINES or FINAL_LINES row's log line."""
    return row_line(*row[1:7])


def segment_text(row: tuple[Any, ...]) -> str:
    line = segment_line(*row[1:])
    return format_segment(line.event(), line.stream)


@dataclass(frozen=True)
class Mode:
    """What the tail prints: its query, and each row's text."""
    query: Query
    text: Callable[[tuple[Any, ...]], str]


MODES = {"lines": Mode(LINES, frame_line), "final": Mode(FINAL_LINES, frame_line),
         "segments": Mode(SEGMENTS, segment_text)}


def wait_for_rows(conn: psycopg.Connection, account: str) -> None:
    """Until a notification names the account, or RECHECK_SECONDS pass."""
    notifies = conn.notifies(timeout=RECHECK_SECONDS)
    try:
        for notify in notifies:
            if notify.payload == account:
                return
    finally:
        notifies.close()


def follow(url: str, conn: psycopg.Connection, follower: Follower, mode: Mode,
           finals: FinalLines | None) -> None:
    """Print new lines until interrupted; reconnect when the database goes."""
    while True:
        try:
            wait_for_rows(conn, follower.account)
            write_new(follower, mode, finals)
        except psycopg.OperationalError as exc:
            print(f"{PROG}: lost the database ({first_line(exc)}); reconnecting", file=sys.stderr, flush=True)
            conn.close()
            conn = reconnect(url)
            follower.conn = conn
            write_new(follower, mode, finals)


def write_new(follower: Follower, mode: Mode, finals: FinalLines | None) -> None:
    rows = follower.new_rows()
    if finals is None:
        write([mode.text(row) for row in rows])
        return
    finals.add(rows)
    finals.refresh(follower.conn, follower.account)
    write(finals.ready())


def reconnect(url: str) -> psycopg.Connection:
    while True:
        time.sleep(RECONNECT_SECONDS)
        try:
            conn = connect(url)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(FRAMES_CHANNEL)))
            print(f"{PROG}: connected again", file=sys.stderr, flush=True)
            return conn
        except (TailError, psycopg.OperationalError):
            continue


def write(lines: Sequence[str]) -> None:
    if lines:
        sys.stdout.write("".join(lines))
        sys.stdout.flush()


def run(account: str, url: str, follow_new: bool, what: str = "lines") -> None:
    if not is_valid_account(account):
        raise TailError(invalid_account_message(account))
    try:
        check_url(url)
    except DatabaseUrlError as exc:
        raise TailError(str(exc)) from None
    conn = connect(url)
    try:
        if follow_new:  # before reading the history: nothing committed after it goes unheard
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(FRAMES_CHANNEL)))
        mode = MODES[what]
        follower = Follower(conn, account, mode.query)
        finals = FinalLines() if follow_new and what == "final" else None
        try:
            write_history(follower, mode, finals)
        except psycopg.errors.UndefinedTable:
            raise TailError(f"database {redact(url)} has no {mode.query.table} table: no worker has used it yet "
                            "(workers create the tables when they start with --database)") from None
        except psycopg.errors.UndefinedColumn:
            raise TailError(f"database {redact(url)} has no final labels yet: its workers are older than this "
                            "tool (a worker of this version migrates it when it starts)") from None
        except psycopg.OperationalError as exc:
            raise TailError(f"reading the database {redact(url)} failed: {first_line(exc)}") from None
        if follow_new:
            follow(url, conn, follower, mode, finals)
    finally:
        conn.close()


def write_history(follower: Follower, mode: Mode, finals: FinalLines | None) -> None:
    chunk: list[tuple[Any, ...]] = []
    for row in follower.history():
        chunk.append(row)
        if len(chunk) >= DUMP_ROWS:
            write_rows(chunk, mode, finals)
            chunk = []
    write_rows(chunk, mode, finals)


def write_rows(rows: Sequence[tuple[Any, ...]], mode: Mode, finals: FinalLines | None) -> None:
    if finals is None:
        write([mode.text(row) for row in rows])
    else:
        finals.add(rows)
        write(finals.ready())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="Print an account's frame lines from the shared "
                                "PostgreSQL (workers started with --database), ordered by frame time.")
    p.add_argument("account", metavar="ACCOUNT", help="the account code")
    p.add_argument("--database", default=os.environ.get("DATABASE_URL", ""),
                   help="postgresql:// URL (default: $DATABASE_URL)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as they are committed")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--final", action="store_const", const="final", dest="what", default="lines",
                       help="each frame's final speaker label in place of the immediate one (none where it has "
                            "none); with --follow a frame is printed once its label is final")
    shown.add_argument("--segments", action="store_const", const="segments", dest="what",
                       help="the account's segments, in the segments file's format, ordered by their end")
    a = p.parse_args(argv)
    if not a.database:
        print(f"{PROG}: no database: give --database postgresql://... or set DATABASE_URL", file=sys.stderr)
        return 2
    try:
        run(a.account, a.database, a.follow, a.what)
    except TailError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # voicestream-tail ... | head: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
