"""EmbeddedStorage: what a worker without --database keeps, in this host's
files: the SQLite voiceprint store and the activity log file. Frames have no
rows: their lines in the per-account log files (framelog.py) and the
segments files (segments.py) are the record.

Each file is opened on first use, so a VAD-only worker (--encoder none)
creates neither.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from .activity import ActivityLog
from .protocol import FrameRecorder
from .segments import SegmentLog
from .sqlite import SqliteVoiceprintStore


class EmbeddedStorage:
    frames: FrameRecorder | None = None

    def __init__(self, store_path: str | Path, activity_log: str | Path, port: int, log_dir: str | Path) -> None:
        self.store_path = store_path
        self.activity_log = activity_log
        self.port = port
        self.log_dir = log_dir

    @cached_property
    def voiceprints(self) -> SqliteVoiceprintStore:
        return SqliteVoiceprintStore(self.store_path)

    @cached_property
    def activity(self) -> ActivityLog:
        return ActivityLog(self.activity_log, self.port)

    @cached_property
    def segments(self) -> SegmentLog:
        return SegmentLog(self.log_dir)

    def health(self) -> dict[str, Any]:
        return {"mode": "embedded"}

    def close(self) -> None:
        """Nothing to stop: SQLite's connections close with their threads."""
