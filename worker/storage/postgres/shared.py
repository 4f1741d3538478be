"""SharedDatabase: everything a worker keeps in PostgreSQL (--database),
assembled from the options in one call: the storage protocol's Storage, so
create_worker only chooses between it and the embedded one:

    shared = SharedDatabase.open(config.database, timeout=config.database_timeout,
                                 spool_dir=config.spool_dir, spool_max_rows=config.spool_max_rows,
                                 host=config.host, port=config.port)
    shared.voiceprints   # PostgresVoiceprintStore, in place of the SQLite store
    shared.activity      # ActivityRows, in place of the activity log file
    shared.frames        # FrameRows: record() each batch's rows and final labels
    shared.segments      # PostgresSegments: an account's segments, for the REST route
    shared.health()      # /health's "database"
    shared.close()
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .activity import ActivityRows
from .connection import Database
from .frames import FrameRows
from .segments import PostgresSegments
from .spool import Spool
from .voiceprints import PostgresVoiceprintStore

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def host_name(listen_host: str) -> str:
    """The frames rows' host: the worker's --host, or the machine's name when
    it listens on every address (ports repeat across hosts)."""
    return socket.gethostname() if listen_host in WILDCARD_HOSTS else listen_host


def spool_path(spool_dir: str | os.PathLike, port: int) -> Path:
    """One spool file per worker process (Spool takes an exclusive lock)."""
    return Path(spool_dir) / f"frames-{port}.sqlite3"


@dataclass
class SharedDatabase:
    database: Database
    spool: Spool
    frames: FrameRows
    voiceprints: PostgresVoiceprintStore
    activity: ActivityRows
    segments: PostgresSegments

    @classmethod
    def open(cls, url: str, *, timeout: float, spool_dir: str | os.PathLike, spool_max_rows: int, host: str,
             port: int, wait: float = 5.0) -> SharedDatabase:
        """Raises url.DatabaseUrlError for a malformed URL (stop the worker)
        and spool.SpoolInUse if another process has this port's spool; never
        for an unreachable database (it is then down: rows spool, /health says so)."""
        name = f"{host_name(host)}:{port}"
        database = Database(url, timeout=timeout, name=name)
        spool = Spool(spool_path(spool_dir, port), spool_max_rows)
        database.open(wait)
        return cls(database, spool, FrameRows(database, spool, host_name(host)), PostgresVoiceprintStore(database),
                   ActivityRows(database, name), PostgresSegments(database))

    def health(self) -> dict[str, Any]:
        return self.frames.health()

    def close(self) -> None:
        """Spooled rows stay on disk for the next start."""
        self.frames.close()
        self.database.close()
        self.spool.close()
