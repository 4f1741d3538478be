"""Per-account frame logs: <log-dir>/<ACCOUNTCODE>.txt, one line per frame
(the line's format: voicestream/logline.py)."""
from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from voicestream.accounts import is_valid_account
from voicestream.logline import STAMP_CHARS

from .appends import RecordWriteError, append_whole

# How far back a frame's line is looked for before it is written. A retry
# reaches another worker within seconds; 32 KiB is ~700 lines of one account.
TAIL_BYTES = 32 * 1024
# Accounts whose last append this FrameLog remembers (_Appended); past it,
# the memory starts over (each entry is ~200 bytes).
MAX_REMEMBERED_ACCOUNTS = 20_000

# A file as fstat sees it: device, inode, size, modification time (ns).
FileState = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class _Appended:
    """An account's file right after this FrameLog appended a line to it: its
    state, and a stamp no line start in its tail is above (the newest there)."""
    state: FileState
    newest: bytes


class FrameLog:
    """Appends whole lines: each under an flock on the account's file, on an
    O_APPEND descriptor, so lines from concurrent threads and worker processes
    never interleave; a line that does not fit (a full disk) is cut back out
    and its append raises (appends.py), so success means a whole line.

    ``once=True`` makes the line's timestamp the frame's identity (the
    balancer stamps each frame once and keeps the stamp across retries): a
    frame whose line another worker already wrote - one that was killed
    before it could reply - is not logged again. Checking and appending under
    the same lock leaves no window, even when a slow worker and the retry's
    worker race for the same frame.

    Reading and searching the tail was two thirds of an append (33 of 49 µs,
    docs/performance.md). So each append remembers the file's state after it
    and the newest stamp in its tail. If the file is in that state when the
    next append holds the lock, nobody has written to it since: it ends with
    that whole line, and a stamp above the newest cannot be in its tail, so
    the line goes in without reading (an account's frames come to one worker,
    in order, so this is the usual case). Anything else - another writer, a
    fragment, an older or equal stamp, a rotated file - reads the tail as
    before, as does a line that is not one frame line (one line, longer than its
    stamp). The state includes the modification time because the size alone
    would come back if someone else truncated the file to below this line and
    wrote it up to the same length again.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        make_directory(self.directory)
        # Joined as text: pathlib's joining was a quarter of an append's CPU.
        self._prefix = os.path.join(self.directory, "")
        self._appended: dict[str, _Appended] = {}  # read and written under the account's flock

    def _remember(self, account: str, fd: int, newest: bytes) -> None:
        """The file's state after a line went in. The line is there whatever
        happens here: a state that cannot be read is only not remembered."""
        try:
            state = _state(fd)
        except OSError:
            return
        if len(self._appended) >= MAX_REMEMBERED_ACCOUNTS:
            self._appended.clear()
        self._appended[account] = _Appended(state, newest)

    def path(self, account: str) -> Path:
        return Path(self._file(account))

    def _file(self, account: str) -> str:
        return account_file(self._prefix, account, ".txt")

    def append(self, account: str, line: str, *, once: bool = False) -> bool:
        """Append line; with once, only if no line with its timestamp is in the
        log's tail. Returns whether the line was written; RecordWriteError
        (naming the cause) if it could not be, and then none of it is there."""
        data = line.encode()
        path = self._file(account)
        try:
            fd = open_for_append(path, os.O_RDWR)
        except OSError as exc:
            raise RecordWriteError("frame log", f"{account}.txt", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, and by the kernel if we die
            stamp = data[:STAMP_CHARS]
            state = _state(fd)
            size = state[2]
            known = self._appended.pop(account, None)  # back once this line is in
            # Only a frame's line - one line, longer than its stamp - is
            # remembered or skips the read: anything else reads as before.
            whole = len(data) > STAMP_CHARS and data.find(b"\n") == len(data) - 1
            if whole and known is not None and known.state == state and (not once or stamp > known.newest):
                newest = max(known.newest, stamp)
            else:
                tail, start = _tail(fd, size)
                if tail and not tail.endswith(b"\n"):
                    tail = _drop_partial_line(fd, tail, start)
                if once and _has_line(tail, start, stamp):
                    return False
                size, newest = start + len(tail), max(_newest_stamp(tail, start), stamp)
            append_whole(fd, data, size)
            if whole:
                self._remember(account, fd, newest)
            return True
        except OSError as exc:
            raise RecordWriteError("frame log", f"{account}.txt", exc) from exc
        finally:
            os.close(fd)


def account_file(prefix: str, account: str, suffix: str) -> str:
    """The path of an account's file: prefix (a directory and its separator),
    the code, suffix. Callers validate too; checked here again because it
    names a file."""
    if not is_valid_account(account):
        raise ValueError(f"not an account code: {account[:40]!r}")
    return f"{prefix}{account}{suffix}"


def open_for_append(path: str, mode: int) -> int:
    """The file opened O_APPEND, made if missing - and its directory too,
    when that was removed while the worker ran."""
    flags = mode | os.O_APPEND | os.O_CREAT
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        make_directory(Path(path).parent)
        return os.open(path, flags, 0o644)


def make_directory(directory: Path) -> None:
    """The log directory, made if missing. One that cannot be made (a file of
    that name, no permission) does not stop the worker: its frames are
    refused with the reason, /health says degraded (guard.py), and it
    recovers once the directory is usable."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # named by the guard's check of the directory, on every /health


def _state(fd: int) -> FileState:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _tail(fd: int, size: int) -> tuple[bytes, int]:
    start = max(size - TAIL_BYTES, 0)
    return os.pread(fd, size - start, start), start


def _newest_stamp(tail: bytes, start: int) -> bytes:
    """The greatest first STAMP_CHARS bytes of a line start in tail (what
    _has_line could find there): stamps are fixed-width text, so the newest."""
    lines = tail.split(b"\n")
    return max((line[:STAMP_CHARS] for line in (lines[1:] if start > 0 else lines)), default=b"")


def _has_line(tail: bytes, start: int, stamp: bytes) -> bool:
    # A line starts at offset 0 of the file or after a newline; the first
    # bytes of a tail that begins mid-line are not a line start.
    return (start == 0 and tail.startswith(stamp)) or (b"\n" + stamp) in tail


def _drop_partial_line(fd: int, tail: bytes, start: int) -> bytes:
    # A writer killed inside write() (SIGKILL is honoured between pages) can
    # leave part of a line. That frame was never answered, so its retry logs
    # it whole; the fragment goes rather than glue itself to the next line.
    cut = tail.rfind(b"\n")
    if cut < 0 and start > 0:
        return tail  # no line end in the tail: not a fragment we can bound
    os.ftruncate(fd, start + cut + 1)
    return tail[:cut + 1]
