"""Print an account's frame lines from the shared PostgreSQL, in the exact
per-account log format, ordered by frame time, one per frame - whichever
hosts processed them:

    .venv/bin/voicestream-tail ACCOUNT --database postgresql://voice@db/voicestream
    .venv/bin/voicestream-tail ACCOUNT --follow      # URL from DATABASE_URL; Ctrl-C to stop

--follow then prints new lines as they are committed: it LISTENs on
voicestream_frames (each batch notifies its accounts) and re-checks every
RECHECK_SECONDS in case a notification was missed. New rows are found by id
with a look-back: ids are handed out before commit, so a row can become
visible after rows with higher ids (see Follower).

Exit status 2, with one line on stderr, when the URL is malformed, the
database unreachable or not a voicestream database.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from voicestream.accounts import invalid_account_message, is_valid_account
from worker.storage.postgres.frames import row_line
from worker.storage.postgres.notify import FRAMES_CHANNEL
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
COLUMNS = "id, stamp, voice, worker, ms, speaker, score"
ORDER = "ORDER BY stamp, stream, seq"


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

    def __init__(self, conn: psycopg.Connection, account: str) -> None:
        self.conn = conn
        self.account = account
        self.readings: deque[tuple[float, int]] = deque()  # (when, highest id handed out by then)
        self.printed: set[int] = set()
        self.bound = 0
        self.last_query = 0.0
        self._sequence: sql.Composed | None = None

    def last_id(self) -> int:
        """The highest frame id handed out so far, committed or not."""
        if self._sequence is None:
            row = self.conn.execute("SELECT pg_get_serial_sequence('frames', 'id')").fetchone()
            if row is None or row[0] is None:
                raise TailError("the frames table has no id sequence: not a voicestream database")
            self._sequence = sql.SQL("SELECT last_value, is_called FROM {}").format(
                sql.Identifier(*row[0].split(".")))
        found = self.conn.execute(self._sequence).fetchone()
        return int(found[0]) if found is not None and found[1] else 0

    def history(self) -> Iterator[str]:
        """Every line of the account so far, ordered by stamp."""
        before = time.monotonic()
        highest = self.last_id()
        self.readings.append((before - LOOKBACK_SECONDS, max(0, highest - STARTUP_LOOKBACK_IDS)))
        self.readings.append((time.monotonic(), highest))
        self.last_query = time.monotonic()
        floor = self.readings[0][1]
        with self.conn.transaction(), self.conn.cursor(name="tail_history") as cur:
            cur.itersize = DUMP_ROWS
            cur.execute(f"SELECT {COLUMNS} FROM frames WHERE account = %s {ORDER}", (self.account,))
            for row in cur:
                if row[0] > floor:
                    self.printed.add(row[0])
                yield row_line(*row[1:])

    def new_lines(self) -> list[str]:
        """Lines committed since the last call (or history()), ordered by stamp."""
        started = time.monotonic()
        while len(self.readings) > 1 and self.readings[1][0] <= self.last_query - LOOKBACK_SECONDS:
            self.readings.popleft()
        if self.readings[0][0] <= self.last_query - LOOKBACK_SECONDS and self.readings[0][1] > self.bound:
            self.bound = self.readings[0][1]
            self.printed = {i for i in self.printed if i > self.bound}
        highest = self.last_id()
        self.readings.append((time.monotonic(), highest))
        self.last_query = started
        rows = self.conn.execute(f"SELECT {COLUMNS} FROM frames WHERE account = %s AND id > %s {ORDER}",
                                 (self.account, self.bound)).fetchall()
        lines = []
        for row in rows:
            if row[0] not in self.printed:
                self.printed.add(row[0])
                lines.append(row_line(*row[1:]))
        return lines


def wait_for_rows(conn: psycopg.Connection, account: str) -> None:
    """Until a notification names the account, or RECHECK_SECONDS pass."""
    notifies = conn.notifies(timeout=RECHECK_SECONDS)
    try:
        for notify in notifies:
            if notify.payload == account:
                return
    finally:
        notifies.close()


def follow(url: str, conn: psycopg.Connection, follower: Follower) -> None:
    """Print new lines until interrupted; reconnect when the database goes."""
    while True:
        try:
            wait_for_rows(conn, follower.account)
            write(follower.new_lines())
        except psycopg.OperationalError as exc:
            print(f"{PROG}: lost the database ({first_line(exc)}); reconnecting", file=sys.stderr, flush=True)
            conn.close()
            conn = reconnect(url)
            follower.conn = conn
            write(follower.new_lines())


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


def run(account: str, url: str, follow_new: bool) -> None:
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
        follower = Follower(conn, account)
        try:
            chunk: list[str] = []
            for line in follower.history():
                chunk.append(line)
                if len(chunk) >= DUMP_ROWS:
                    write(chunk)
                    chunk = []
            write(chunk)
        except psycopg.errors.UndefinedTable:
            raise TailError(f"database {redact(url)} has no frames table: no worker has used it yet "
                            "(workers create the tables when they start with --database)") from None
        except psycopg.OperationalError as exc:
            raise TailError(f"reading the database {redact(url)} failed: {first_line(exc)}") from None
        if follow_new:
            follow(url, conn, follower)
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="Print an account's frame lines from the shared "
                                "PostgreSQL (workers started with --database), ordered by frame time.")
    p.add_argument("account", metavar="ACCOUNT", help="the account code")
    p.add_argument("--database", default=os.environ.get("DATABASE_URL", ""),
                   help="postgresql:// URL (default: $DATABASE_URL)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as they are committed")
    a = p.parse_args(argv)
    if not a.database:
        print(f"{PROG}: no database: give --database postgresql://... or set DATABASE_URL", file=sys.stderr)
        return 2
    try:
        run(a.account, a.database, a.follow)
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
