"""Checked appends to the record's files (framelog.py, segments.py): data
lands whole or not at all, and a failure says why.

os.write may write less than it was given: on a full file system it writes
what fits and only the next call raises ENOSPC. Unchecked, that left the
fragment in the file and reported success (400 appends on an 8 KB tmpfs: 400
successes, 179 lines). Here the rest is written until it is all there or a
write raises; then the file is cut back to where the data began, so no
partial line is left behind.
"""
from __future__ import annotations

import errno
import logging
import os

log = logging.getLogger("worker.record")


class RecordWriteError(Exception):
    """A record file could not be written (nothing of the data is left in
    it). The message names the file, relative to the log directory, and the
    cause in the OS's words: "frame log X5.txt cannot be written: is a directory"."""

    def __init__(self, what: str, name: str, error: OSError) -> None:
        self.name = name
        self.errno = error.errno
        self.reason = describe(error)
        super().__init__(f"{what} {name} cannot be written: {self.reason}")


def describe(error: OSError) -> str:
    """The OS's words for an error, as they read inside a sentence: "no space left on device"."""
    text = error.strerror or (os.strerror(error.errno) if error.errno else str(error))
    return text[:1].lower() + text[1:]


def append_whole(fd: int, data: bytes, start: int) -> None:
    """Append data to fd (opened O_APPEND, under the caller's lock, so the
    file is `start` bytes long and nobody else writes to it) whole; on an
    OSError the file is cut back to start and the error raised."""
    view = memoryview(data)
    written = 0
    try:
        while written < len(data):
            n = os.write(fd, view[written:])
            if n == 0:  # no error and no progress: as full as a file system gets
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written += n
    except OSError:
        if written:
            undo(fd, start)
        raise


def undo(fd: int, start: int) -> None:
    try:
        os.ftruncate(fd, start)
    except OSError as exc:
        # Shrinking needs no space, so this is rare (an I/O error); the next
        # append under the lock drops the fragment (framelog._drop_partial_line).
        log.error("could not cut a partly written line back: %s", describe(exc))
