"""Per-account frame logs: logs/<ACCOUNTCODE>.txt, one line per frame.

The line prefix is a contract with existing tooling; it must not change:
    2023-01-20 13:44:44.123435 voice=1, 7001, 4ms
Speaker verification appends ", speaker=alice, score=0.71" after it.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path


def format_line(when: datetime, voice: int, port: int, model_ms: float,
                speaker: str | None = None, score: float | None = None) -> str:
    line = f"{when.strftime('%Y-%m-%d %H:%M:%S.%f')} voice={voice}, {port}, {round(model_ms)}ms"
    if speaker is not None:
        line += f", speaker={speaker}"
        if score is not None:
            line += f", score={score:.2f}"
    return line + "\n"


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class FrameLog:
    """Appends whole lines; one write() on an O_APPEND descriptor per line, so
    lines from concurrent threads and worker processes never interleave."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, account: str) -> Path:
        # account is validated by the caller against ACCOUNT_PATTERN; never a path.
        return self.directory / f"{account}.txt"

    def append(self, account: str, line: str) -> None:
        fd = os.open(self.path(account), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
