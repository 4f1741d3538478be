"""Database: one worker's link to PostgreSQL - a connection pool for the
request path, an up/down state, and the LISTEN thread (notify.py).

The request path must never wait long for the database. Every pooled
connection carries a statement timeout (--database-timeout), a connection is
waited for at most that long, and a failure marks the database down: from
then on callers are refused at once (DatabaseUnavailable) instead of each
paying the timeout, until the LISTEN thread has reconnected or a probe
through the pool has worked.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import Notify
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from .notify import Listener
from .url import check_url, redact

log = logging.getLogger("worker.database")

# Seconds a new connection may take (libpq's minimum is 2): spent by the
# pool's and the listener's threads, never by a request.
CONNECT_TIMEOUT = 3
# The pool gives up reconnecting a slot after this long and opens new ones on
# demand instead: its own backoff would otherwise reach minutes in an outage.
POOL_RECONNECT_SECONDS = 2.0
# After a failure the database stays down at least this long: a database that
# answers probes but times out on real work costs one batch a timeout per
# second, not every batch.
MIN_DOWN_SECONDS = 1.0
# TCP: a server that vanished without a word (a partition, a dead host) is
# noticed within seconds, not the kernel's minutes: an idle connection by
# keepalive probes, a request whose bytes go unacknowledged by
# tcp_user_timeout (2 x the database timeout on the pool's connections).
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 2, "keepalives_interval": 1, "keepalives_count": 2}
MIN_TCP_USER_TIMEOUT_MS = 1000


class DatabaseUnavailable(RuntimeError):
    """The database is down (or too slow); the message says why. This
    backend's own: the voiceprint store hands it on as the storage protocol's
    StorageUnavailable, frame rows and activity rows handle it here."""


class Database:
    """Usage: ``db = Database(url, timeout=0.5, name="host:7001").open()``;
    ``with db.connection() as conn: ...`` on the request path; ``db.close()``.

    url is checked at once (url.DatabaseUrlError names what is malformed);
    nothing connects before open(), and open() never fails on an unreachable
    database: it is then down, and reconnects by itself.
    """

    def __init__(self, url: str, *, timeout: float = 0.5, name: str = "voicestream",
                 min_connections: int = 1, max_connections: int = 8) -> None:
        self.url = check_url(url)
        self.timeout = timeout
        self.name = name
        params = conninfo_to_dict(url)
        # The URL's own options are kept; the statement timeout is appended.
        options = f"{params.get('options', '')} -c statement_timeout={max(1, round(timeout * 1000))}".strip()
        tcp_user_timeout = max(MIN_TCP_USER_TIMEOUT_MS, round(2000 * timeout))
        request_conninfo = make_conninfo(url, options=options, application_name=name,
                                         **self._connect_params(params, tcp_user_timeout=tcp_user_timeout))
        # Public for its statistics (get_stats()); use connection() to borrow from it.
        self.pool: ConnectionPool = ConnectionPool(
            request_conninfo, kwargs={"autocommit": True}, min_size=min_connections, max_size=max_connections,
            open=False, name=name, timeout=timeout, reconnect_timeout=POOL_RECONNECT_SECONDS)
        self._listener = Listener(make_conninfo(url, **self._connect_params(params, tcp_user_timeout=5000)), name,
                                  self._on_listener_up, self._on_listener_down, self._on_tick)
        self._up = threading.Event()
        self._tried = threading.Event()  # the first connection attempt has ended, either way
        self._lock = threading.Lock()
        self._error: str | None = "not connected yet"
        self._ever_up = False
        self._down_since = time.monotonic()
        self.version: int | None = None  # the schema's, once migrated

    @staticmethod
    def _connect_params(params: dict[str, Any], tcp_user_timeout: int) -> dict[str, Any]:
        # The URL's own settings win over these defaults.
        defaults: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "tcp_user_timeout": tcp_user_timeout,
                                    **KEEPALIVE}
        return {key: value for key, value in defaults.items() if key not in params}

    # --- life cycle ---

    def open(self, wait: float = 5.0) -> Database:
        """Start the pool and the LISTEN thread; wait up to `wait` seconds for
        the first connection attempt to end (up or down), so a worker that can
        reach its database starts with it up."""
        self.pool.open(wait=False)
        self._listener.start()
        deadline = time.monotonic() + wait
        self._tried.wait(wait)
        if self.up:
            try:
                self.pool.wait(timeout=max(0.1, deadline - time.monotonic()))
            except PoolTimeout:
                pass  # connections keep coming in the background
        return self

    def close(self) -> None:
        self._listener.close()
        self._up.clear()
        self.pool.close(timeout=5)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- state ---

    @property
    def up(self) -> bool:
        return self._up.is_set()

    @property
    def error(self) -> str | None:
        """Why the database is down; None while it is up."""
        return None if self.up else self._error

    def wait_up(self, timeout: float | None = None) -> bool:
        return self._up.wait(timeout)

    def health(self) -> dict[str, Any]:
        state: dict[str, Any] = {"mode": "postgresql", "state": "up" if self.up else "down"}
        if not self.up:
            state["error"] = self._error
        return state

    def subscribe(self, channel: str, callback: Callable[[Notify | None], None]) -> None:
        """callback(notify) on the LISTEN thread for each NOTIFY on channel,
        and callback(None) whenever notifications may have been missed (LISTEN
        begins, at start and after each reconnect). Quick, it must not block.
        While the database is up, returns once LISTEN is on."""
        self._listener.subscribe(channel, callback)

    def mark_down(self, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else describe(error)
        with self._lock:
            news = self._up.is_set() or text != self._error
            self._up.clear()
            self._error = text
            self._down_since = time.monotonic()
        if news:  # once per outage and cause, not per retry
            log.warning("database %s is down: %s", redact(self.url), text)

    def _mark_up(self) -> None:
        with self._lock:
            was_up, recovered = self._up.is_set(), self._ever_up
            self._error = None
            self._ever_up = True
            self._up.set()
        if not was_up:
            if recovered:
                log.warning("database %s is up again", redact(self.url))
            else:
                log.info("database %s is up (schema version %s)", redact(self.url), self.version)

    def unavailable(self) -> DatabaseUnavailable:
        return DatabaseUnavailable(f"the database is unavailable ({self._error or 'down'}); try again shortly")

    # --- the request path ---

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        """A pooled autocommit connection (statement timeout: self.timeout).
        Raises DatabaseUnavailable at once while down; a connection failure,
        a timeout or a pool wait longer than `timeout` (default self.timeout)
        marks the database down and raises it too. Other errors (a bug in a
        statement, the caller's own exceptions) pass through unchanged."""
        if not self.up:
            raise self.unavailable()
        try:
            with self.pool.connection(timeout=self.timeout if timeout is None else timeout) as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            self.mark_down(exc)
            raise self.unavailable() from exc

    # --- LISTEN thread callbacks ---

    def _on_listener_up(self, version: int) -> None:
        self.version = version
        # Connections of the pool may be dead sockets from before the outage:
        # test each now rather than let a request find out.
        self.pool.check()
        self._mark_up()
        self._tried.set()

    def _on_listener_down(self, error: Exception) -> None:
        self.mark_down(error)
        self._tried.set()

    def _on_tick(self) -> None:
        """While the LISTEN connection works but a request marked the
        database down, probe through the pool."""
        if self.up or time.monotonic() - self._down_since < MIN_DOWN_SECONDS:
            return
        try:
            with self.pool.connection(timeout=max(1.0, self.timeout)) as conn:
                conn.execute("SELECT 1")
        except (psycopg.Error, PoolTimeout) as exc:
            self.mark_down(exc)
            return
        self._mark_up()


def describe(error: BaseException) -> str:
    """An error's first line, saying what kind of failure it was."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    if isinstance(error, PoolTimeout):
        return f"no database connection within the timeout ({text})"
    if isinstance(error, psycopg.errors.QueryCanceled):
        return f"statement timed out ({text})"
    return text
