"""PostgresSegments: an account's final segments from the shared database's
segments table (frames.py writes it), whichever hosts made them final: the
storage protocol's SegmentReader with --database."""
from __future__ import annotations

import psycopg

from voicestream.segments import SegmentLine
from voicestream.stamps import stamp_text

from ..protocol import StorageUnavailable
from .connection import Database, DatabaseUnavailable, describe
from .frames import stored_score

# Ordered as the segments file reader orders them: stream by code point (C collation).
SELECT = """
SELECT start_stamp, end_stamp, speaker, score, start_seq, end_seq, frames, stream FROM segments
WHERE account = %s AND end_stamp > %s AND (%s::text IS NULL OR stream = %s)
ORDER BY end_stamp, stream COLLATE "C", start_seq
LIMIT %s"""


def segment_line(start: int, end: int, speaker: str, score: float | None, start_seq: int, end_seq: int, frames: int,
                 stream: str) -> SegmentLine:
    """A segments row as the segments file's line has it (score: 2 places)."""
    return SegmentLine(stamp_text(start), stamp_text(end), speaker, stored_score(score),
                       start_seq, end_seq, frames, stream)


class PostgresSegments:
    def __init__(self, database: Database) -> None:
        self.database = database

    def read(self, account: str, *, since: int | None = None, stream: str | None = None,
             limit: int = 100) -> list[SegmentLine]:
        """The storage protocol's SegmentReader.read; StorageUnavailable while
        the database is down or for any error of psycopg."""
        try:
            with self.database.connection() as conn:
                rows = conn.execute(SELECT, (account, -1 if since is None else since, stream, stream, limit)).fetchall()
        except DatabaseUnavailable as exc:
            raise StorageUnavailable(str(exc)) from exc
        except psycopg.Error as exc:
            raise StorageUnavailable(f"the database could not serve segments ({describe(exc)})") from exc
        return [segment_line(*row) for row in rows]
