"""What the rest of the worker asks of its storage, whichever backend serves
it, and the one error a backend raises.

Two backends, chosen once per worker (worker/context.py):
- embedded (embedded.py): this host's files, the SQLite voiceprint store
  (sqlite.py) and the activity log file (activity.py);
- shared (postgres/, --database): PostgreSQL for every host, with one row
  per frame and the on-disk spool that holds rows while it is down.
Both write every frame's line to this host's log files (framelog.py), and
every segment's to its segments file (segments.py).

Each backend turns its driver's errors (sqlite3's, psycopg's and its pool's)
into StorageUnavailable (RowsNotStored for frame rows nothing durable
took), so the callers above - the streaming tracker and the
speaker API - catch one error type and import no database driver.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from voicestream.segments import SegmentLine

from .rows import FinalLabel, FrameRow
from .voiceprints import AccountThreshold, EncoderId, Voiceprint


class StorageUnavailable(RuntimeError):
    """The store cannot serve this call now (the shared database is down, the
    SQLite file is locked past its busy timeout or unreadable); the message
    says why, for a 503. Nothing was changed."""


class RowsNotStored(StorageUnavailable):
    """FrameRecorder.record could store the rows nowhere durable: the shared
    database did not take them and this host's spool could not be written.
    full: the spool's file system is full (else some other write error)."""

    def __init__(self, message: str, *, full: bool) -> None:
        super().__init__(message)
        self.full = full


class VoiceprintStore(Protocol):
    """What the speaker service and the streaming roster need of a voiceprint
    store: sqlite.SqliteVoiceprintStore (one host) or
    postgres.voiceprints.PostgresVoiceprintStore (--database, every host).
    Every method raises StorageUnavailable when the store cannot serve it."""

    def enroll(self, account: str, name: str, encoder: EncoderId, embedding: np.ndarray,
               speech_seconds: float) -> Voiceprint:
        """Add one sample's embedding to the speaker's voiceprint (creating it).
        Raises EncoderMismatch if the voiceprint was made by another encoder."""
        ...

    def get(self, account: str, name: str) -> Voiceprint | None: ...

    def list(self, account: str) -> list[Voiceprint]: ...

    def delete(self, account: str, name: str) -> bool: ...

    def delete_all(self, account: str) -> int: ...

    def threshold(self, account: str, encoder: str) -> AccountThreshold | None:
        """The account's own threshold for encoder kind `encoder`, if it set one."""
        ...

    def set_threshold(self, account: str, encoder: str, threshold: float) -> AccountThreshold: ...

    def delete_threshold(self, account: str, encoder: str) -> bool: ...

    def data_version(self) -> int:
        """Moves whenever voiceprints changed anywhere: cached ones are stale."""
        ...

    def check_available(self) -> None:
        """Raises StorageUnavailable when the store is known to be down, so a
        request is refused before any work is done for it."""
        ...


class ActivityWriter(Protocol):
    """Where enrollments, deletions and verifications are recorded:
    activity.ActivityLog (a file on this host) or postgres.activity.ActivityRows.
    Written after what it records has happened: it never raises for the
    backend being down (the record goes to the worker's log instead)."""

    def write(self, event: str, account: str, **fields: Any) -> None: ...


class FrameRecorder(Protocol):
    def record(self, rows: Sequence[FrameRow], finals: Sequence[FinalLabel] = ()) -> None:
        """Store the rows durably (postgres/frames.py: PostgreSQL or this
        host's spool) before the frames are answered, and the final labels
        (closed segments) of frames stored now or before: the segment, and
        its frames' rows' final speaker and score. RowsNotStored if neither
        could take them."""
        ...


class SegmentReader(Protocol):
    """An account's final segments as its record keeps them: segments.SegmentLog
    (this host's segments file) or postgres.segments.PostgresSegments (every
    host's). Scores as the record shows them: 2 places."""

    def read(self, account: str, *, since: int | None = None, stream: str | None = None,
             limit: int = 100) -> list[SegmentLine]:
        """Up to limit segments of the account (of one stream if given) that
        end after since (a frame stamp), ordered by their end, stream and
        first frame. Raises StorageUnavailable when the record cannot be read."""
        ...


class Storage(Protocol):
    """Everything one worker keeps, from one backend."""

    @property
    def voiceprints(self) -> VoiceprintStore: ...

    @property
    def activity(self) -> ActivityWriter: ...

    @property
    def frames(self) -> FrameRecorder | None:
        """Every frame's row, or None where the log files are the only record (embedded)."""
        ...

    @property
    def segments(self) -> SegmentReader:
        """Where GET /accounts/<code>/segments reads: this host's segments
        files (embedded) or PostgreSQL's segments table (shared)."""
        ...

    def health(self) -> dict[str, Any]:
        """/health's "database": {"mode": "embedded"}, or the shared database's state."""
        ...

    def close(self) -> None: ...
