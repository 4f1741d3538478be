"""ActivityLog: the embedded activity log, one JSON object per line in a file
shared by every worker process of a host (postgres/activity.py keeps the same
records as rows)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .voiceprints import now_text


class ActivityLog:
    """One line for every enrollment, deletion and verification, with scores
    and times."""

    def __init__(self, path: str | os.PathLike[str], port: int) -> None:
        self.path = Path(path)
        self.port = port
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, account: str, **fields: Any) -> None:
        record = {"time": now_text(), "event": event, "worker": self.port, "account": account, **fields}
        line = json.dumps(record, separators=(",", ":")) + "\n"
        # One write() on an O_APPEND descriptor: lines of concurrent threads
        # and processes never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
