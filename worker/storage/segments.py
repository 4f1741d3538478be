"""Per-account segments files: <log-dir>/<ACCOUNTCODE>.segments.txt, the
final speaker labels, one line per segment (the line's format:
voicestream/segments.py), beside the account's frame log.

A segment is written once, by the worker whose tracker made its labels
final: a retried frame is answered from memory, never tracked again, and a
frame retried on another worker starts that worker's tracker afresh (its
stream gets a tracker_restart event), so no segment is written twice.

read() serves GET /accounts/<code>/segments on a worker without --database:
the segments this host's workers made final (an account that moved to
another host continues its file there).
"""
from __future__ import annotations

import fcntl
import heapq
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from voicestream.events import Segment
from voicestream.segments import SegmentLine, format_segment, parse_segment
from voicestream.stamps import stamp_text

from .appends import RecordWriteError, append_whole
from .framelog import account_file, make_directory, open_for_append
from .protocol import StorageUnavailable

SUFFIX = ".segments.txt"


class SegmentLog:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        make_directory(self.directory)
        self._prefix = os.path.join(self.directory, "")

    def path(self, account: str) -> Path:
        return Path(account_file(self._prefix, account, SUFFIX))

    def append(self, account: str, segments: Sequence[tuple[str, Segment]]) -> None:
        """(stream, segment) lines, appended whole under the file's lock, or
        RecordWriteError naming the cause and none of them written."""
        if not segments:
            return
        data = "".join(format_segment(segment, stream) for stream, segment in segments).encode()
        name = f"{account}{SUFFIX}"
        try:
            fd = open_for_append(account_file(self._prefix, account, SUFFIX), os.O_WRONLY)
        except OSError as exc:
            raise RecordWriteError("segments file", name, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, and by the kernel if we die
            append_whole(fd, data, os.fstat(fd).st_size)
        except OSError as exc:
            raise RecordWriteError("segments file", name, exc) from exc
        finally:
            os.close(fd)

    def read(self, account: str, *, since: int | None = None, stream: str | None = None,
             limit: int = 100) -> list[SegmentLine]:
        """The storage protocol's SegmentReader.read, from this host's file.
        Reads the whole file: its lines are in the order segments closed,
        which is by end within a stream, not across an account's streams."""
        after = stamp_text(since) if since is not None else ""  # stamp texts sort as their times
        try:
            with open(self.path(account), encoding="utf-8", errors="replace") as file:
                found = heapq.nsmallest(limit, _matching(file, after, stream), key=_order)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageUnavailable(f"the segments file of account {account} cannot be read ({exc})") from exc
        return found


def _matching(lines: Iterator[str], after: str, stream: str | None) -> Iterator[SegmentLine]:
    for text in lines:
        # A line cut short by a writer killed mid-write does not parse: skipped.
        line = parse_segment(text)
        if line is not None and line.end > after and (stream is None or line.stream == stream):
            yield line


def _order(line: SegmentLine) -> tuple[str, str, int]:
    return line.end, line.stream, line.start_seq
