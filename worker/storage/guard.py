"""DiskGuard: whether this worker can write its frames' record now.

A frame is answered ok only once its record is written (its log line, its
segments, with --database its row). What stops every write, not one
account's, makes the worker degraded: frames are refused with the reason
(another worker can take them), /health answers 503 so that the balancers
move its accounts, and it recovers by itself:

- the log directory (or, with --database, the spool's) has less free space
  than --min-free-mb, is not a directory or is not writable: looked at
  (stat, access, statvfs: a few microseconds) at most once per CHECK_SECONDS,
  on a frame batch or a /health, never per frame;
- a write failed in a way that is the file system's (ENOSPC, EDQUOT, EROFS,
  a spool that cannot be written): it holds until a check sees the space
  grown by RECOVERY_BYTES since, or for FAULT_SECONDS, then writes are tried
  again.

Any other failed write (a directory named X5.txt, a file without write
permission) is that account's alone: its frames get the error, the others
go on. Nothing here imports the rest of the worker.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .appends import RecordWriteError, describe
from .protocol import RowsNotStored

log = logging.getLogger("worker.record")

# Why a frame's record could not be written: the label values of
# voicestream_worker_frames_unrecorded_total, a fixed set.
DISK_FULL = "disk_full"  # no space (or under --min-free-mb) where the logs or the spool are
LOG_UNWRITABLE = "log_unwritable"  # the log directory, or one account's file in it, cannot be written
SPOOL_UNWRITABLE = "spool_unwritable"  # with --database: the spool cannot be written, for another reason
REASONS = (DISK_FULL, LOG_UNWRITABLE, SPOOL_UNWRITABLE)

# The checks' period: a busy worker writes ~175 KB of lines a second (2,400
# frames of 73 bytes), far inside any sensible --min-free-mb.
CHECK_SECONDS = 1.0
# A full disk counts as free again once this much more is free than when a
# write failed (about 900 lines): not the few bytes another process just
# released, which would fill again at the next batch.
RECOVERY_BYTES = 64 * 1024
# How long a failed write stops writing when no check can tell it is over
# (a quota, a remount, a spool error): then writes are tried again.
FAULT_SECONDS = 10.0
MB = 1_000_000

FILE_SYSTEM_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
FILE_SYSTEM_READ_ONLY = frozenset({errno.EROFS})


@dataclass(frozen=True, slots=True)
class Fault:
    """Why a frame's record could not be written. message names no path
    outside the log directory and no other account: it goes in the frame's
    reply, which the balancer may pass to its client."""
    reason: str  # one of REASONS
    message: str
    worker_wide: bool  # True: every frame here (503, another worker can take it); False: one account's (500)


@dataclass(frozen=True, slots=True)
class Watched:
    """A directory the record is written in: what it holds (for messages),
    the option that names it."""
    what: str
    option: str
    path: Path


class DiskGuard:
    """Thread-safe. directories: the log directory first (made here if
    missing), then with --database the spool's."""

    def __init__(self, directories: Sequence[Watched], min_free_bytes: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directories = tuple(directories)
        self.min_free_bytes = min_free_bytes
        self.free_bytes: int | None = None  # the least free space of the directories at the last check
        self._clock = clock
        self._lock = threading.Lock()
        self._next_check = float("-inf")
        self._checked: Fault | None = None  # what the last check found
        self._failed: Fault | None = None  # a failed write's, held until it is over
        self._failed_at = 0.0
        self._free_at_failure = 0

    @classmethod
    def of_log_dir(cls, log_dir: str | os.PathLike[str], min_free_bytes: int = 0,
                   spool_dir: str | os.PathLike[str] | None = None) -> DiskGuard:
        watched = [Watched("the frame logs", "--log-dir", Path(log_dir))]
        if spool_dir is not None:
            watched.append(Watched("the spool", "--spool-dir", Path(spool_dir)))
        return cls(watched, min_free_bytes)

    @property
    def current(self) -> Fault | None:
        """The fault stopping every write, as last seen (no check)."""
        return self._failed or self._checked

    def fault(self) -> Fault | None:
        """The fault stopping every write now, or None: the directories
        are looked at if the last check is CHECK_SECONDS old."""
        if self._clock() >= self._next_check:
            with self._lock:
                if self._clock() >= self._next_check:  # not done by another thread meanwhile
                    self._check()
        return self.current

    def failed(self, error: RecordWriteError | RowsNotStored) -> Fault:
        """What a failed write means: a worker-wide fault (held: every write
        stops until it is over) or the account's own."""
        first = self.directories[0].option
        if isinstance(error, RowsNotStored):
            fault = Fault(DISK_FULL if error.full else SPOOL_UNWRITABLE, str(error), True)
        elif error.errno in FILE_SYSTEM_FULL:
            fault = Fault(DISK_FULL, f"{first} cannot be written: {error.reason}", True)
        elif error.errno in FILE_SYSTEM_READ_ONLY:
            fault = Fault(LOG_UNWRITABLE, f"{first} cannot be written: {error.reason}", True)
        else:
            # The directory itself (gone, replaced by a file), or only the account's file?
            with self._lock:
                self._check()
                checked = self._checked
            return checked if checked is not None else Fault(LOG_UNWRITABLE, str(error), False)
        with self._lock:
            before = self.current
            self._check(log_change=False)
            self._failed, self._failed_at, self._free_at_failure = fault, self._clock(), self.free_bytes or 0
            self._log_change(before, detail=str(error))
        return fault

    def _check(self, log_change: bool = True) -> None:
        """Under self._lock: look at the directories; end a held fault that is over."""
        now = self._clock()
        self._next_check = now + CHECK_SECONDS
        before = self.current
        checked, free = None, None
        for watched in self.directories:
            problem, available = self._look(watched)
            checked = checked or problem
            if available is not None:
                free = available if free is None else min(free, available)
        self._checked, self.free_bytes = checked, free
        if self._failed is not None and checked is None and (
                now - self._failed_at >= FAULT_SECONDS
                or (free is not None and free >= self._free_at_failure + RECOVERY_BYTES)):
            self._failed = None
        if log_change:
            self._log_change(before)

    def _log_change(self, before: Fault | None, detail: str = "") -> None:
        after = self.current
        if after == before:
            return
        if after is None:
            log.warning("frames are recorded again (%s free)", _megabytes(self.free_bytes))
        else:
            log.error("frames are refused from now on: %s%s", after.message, f" ({detail})" if detail else "")

    def _look(self, watched: Watched) -> tuple[Fault | None, int | None]:
        """What stops writing in one directory, and its free bytes."""
        path, option = watched.path, watched.option
        is_log_dir = watched is self.directories[0]
        unwritable = LOG_UNWRITABLE if is_log_dir else SPOOL_UNWRITABLE
        if is_log_dir and not path.exists():
            try:
                path.mkdir(parents=True, exist_ok=True)  # removed while the worker ran: made again
            except OSError as exc:
                return Fault(unwritable, f"{option} cannot be made: {describe(exc)}", True), None
        if not path.is_dir():
            return Fault(unwritable, f"{option} is not a directory", True), None
        if not os.access(path, os.W_OK | os.X_OK):
            return Fault(unwritable, f"{option} is not writable", True), None
        try:
            stat = os.statvfs(path)
        except OSError as exc:
            return Fault(unwritable, f"{option} cannot be read: {describe(exc)}", True), None
        free = stat.f_bavail * stat.f_frsize
        if free < self.min_free_bytes:
            return Fault(DISK_FULL, f"{_megabytes(free)} free where {watched.what} are, under --min-free-mb "
                                    f"{self.min_free_bytes // MB}", True), free
        return None, free


def _megabytes(free: int | None) -> str:
    return "unknown space" if free is None else f"{free / MB:.1f} MB"
