"""ActivityRows: the activity log (enrollments, deletions, verifications) as
rows of the shared database; the same call as the file's
ActivityLog.write(event, account, **fields)."""
from __future__ import annotations

import json
import logging
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .connection import Database, DatabaseUnavailable

log = logging.getLogger("worker.database")


class ActivityRows:
    def __init__(self, database: Database, worker: str) -> None:
        self.database = database
        self.worker = worker  # which worker wrote it: host:port, as ports repeat across hosts

    def write(self, event: str, account: str, **fields: Any) -> None:
        """One row. Written after what it records has happened (an enrollment
        committed), so a database failure here must not turn that into an
        error: the record goes to the worker's log instead."""
        try:
            with self.database.connection() as conn:
                conn.execute("INSERT INTO activity (event, worker, account, fields) VALUES (%s, %s, %s, %s)",
                             (event, self.worker, account, Jsonb(fields)))
        except (DatabaseUnavailable, psycopg.Error) as exc:
            record = {"event": event, "worker": self.worker, "account": account, **fields}
            log.warning("activity row not written (%s): %s", exc, json.dumps(record, separators=(",", ":")))
