"""Per-account segments files: <log-dir>/<ACCOUNTCODE>.segments.txt, the
final speaker labels, one line per segment (the line's format:
voicestream/segments.py), beside the account's frame log.

A segment is written once, by the worker whose tracker made its labels
final: a retried frame is answered from memory, never tracked again, and a
frame retried on another worker starts that worker's tracker afresh (its
stream gets a tracker_restart event), so no segment is written twice.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

from voicestream.accounts import is_valid_account
from voicestream.events import Segment
from voicestream.segments import format_segment

SUFFIX = ".segments.txt"


class SegmentLog:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._prefix = os.path.join(self.directory, "")

    def path(self, account: str) -> Path:
        if not is_valid_account(account):
            raise ValueError(f"not an account code: {account[:40]!r}")
        return Path(f"{self._prefix}{account}{SUFFIX}")

    def append(self, account: str, segments: Sequence[tuple[str, Segment]]) -> None:
        """(stream, segment) lines, in one write() under the file's lock."""
        if not segments:
            return
        data = "".join(format_segment(segment, stream) for stream, segment in segments).encode()
        fd = os.open(self.path(account), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, and by the kernel if we die
            os.write(fd, data)
        finally:
            os.close(fd)
