"""The worker's one dedicated connection: it migrates the schema, LISTENs, and
is the first to know when the database goes away or comes back.

LISTEN needs a connection of its own (a pooled one is handed to other
threads between statements). Its socket breaks as soon as the server stops,
so it doubles as the database's health probe: while it is down the thread
reconnects every second and reports each outcome.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg import Notify, sql

from .schema import migrate

log = logging.getLogger("worker.database")

FRAMES_CHANNEL = "voicestream_frames"          # payload: the account of new frame rows
VOICEPRINTS_CHANNEL = "voicestream_voiceprints"  # payload: the account of an enroll or delete
RECONNECT_SECONDS = 1.0
# How long a wait for notifications lasts: the longest a change of the
# subscriptions, a probe or close() waits for this thread.
TICK_SECONDS = 0.25


class Listener:
    """A thread holding the LISTEN connection. Callbacks run on it, so they
    must be quick: on_up(version) after each (re)connect and migration,
    on_down(error) when it fails, on_tick() between waits, and subscribers'
    callback(notify) per notification (channel, payload, pid of the sending
    backend) - and callback(None) each time LISTEN begins (at the start and
    after a reconnect): whatever was notified before was not heard, so
    anything cached may be stale."""

    def __init__(self, conninfo: str, name: str, on_up: Callable[[int], None], on_down: Callable[[Exception], None],
                 on_tick: Callable[[], None]) -> None:
        self.conninfo = conninfo
        self.name = name
        self.on_up, self.on_down, self.on_tick = on_up, on_down, on_tick
        self._subscribers: dict[str, list[Callable[[Notify | None], None]]] = {}
        self._listening: set[str] = set()  # channels the current connection LISTENs on
        self._connected = False
        self._lock = threading.Condition()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-listen", daemon=True)

    def subscribe(self, channel: str, callback: Callable[[Notify | None], None], wait: float = 2.0) -> None:
        """callback(notify) for every notification on channel. While
        connected, returns once LISTEN is on (at most `wait` seconds)."""
        with self._lock:
            self._subscribers.setdefault(channel, []).append(callback)
            self._lock.wait_for(lambda: channel in self._listening or not self._connected, wait)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(RECONNECT_SECONDS + 10)

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, application_name=f"{self.name} listen") as conn:
                    self._serve(conn)
            except psycopg.Error as exc:
                if not self._closed.is_set():
                    self.on_down(exc)
            except Exception:  # a callback's bug must not end the thread: then nothing would reconnect
                log.exception("database listener failed")
                self.on_down(RuntimeError("database listener failed; see the worker's log"))
            self._closed.wait(RECONNECT_SECONDS)

    def _serve(self, conn: psycopg.Connection) -> None:
        version = migrate(conn)
        with self._lock:
            self._connected = True
        try:
            self._listen_new(conn)
            self.on_up(version)
            while not self._closed.is_set():
                for notify in conn.notifies(timeout=TICK_SECONDS):
                    self._dispatch(notify.channel, notify)
                self._listen_new(conn)
                self.on_tick()
        finally:
            with self._lock:
                self._connected = False
                self._listening.clear()
                self._lock.notify_all()

    def _listen_new(self, conn: psycopg.Connection) -> None:
        with self._lock:
            new = set(self._subscribers) - self._listening
        for channel in sorted(new):
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            with self._lock:
                self._listening.add(channel)
                self._lock.notify_all()
            self._dispatch(channel, None)  # changes before this LISTEN went unheard

    def _dispatch(self, channel: str, notify: Notify | None) -> None:
        with self._lock:
            callbacks = list(self._subscribers.get(channel, ()))
        for callback in callbacks:
            callback(notify)
