"""The PostgreSQL a --database run writes to: started by the benchmark
(voicetools.postgres, removed at the end) or given by --database-url; its
server processes, whose CPU is the shared record's cost outside the workers;
and the check that it holds exactly one row per frame answered."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from voicetools.cluster import free_port
from voicetools.postgres import PostgresServer, PostgresUnavailable

from . import BenchError

LOCAL_HOSTS = frozenset({"", "localhost", "::1"})
SPOOL_DRAIN_SECONDS = 30.0  # rows spooled during a level (a slow insert) reach PostgreSQL within this
CONNECT_TIMEOUT = 5


def postmaster_pid(data_dir: Path) -> int:
    """The server's pid: the first line of postmaster.pid in its data directory."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError) as exc:
        raise BenchError(f"no running PostgreSQL in {data_dir}: {exc}") from None


def listening_pid(url: str) -> int | None:
    """The local process listening on the URL's port (a postmaster), or None
    when the URL names another machine or nothing here listens there."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not (host in LOCAL_HOSTS or host.startswith("127.")) or parts.port is None:
        return None
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for c in connections:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == parts.port and c.pid:
            return c.pid
    return None


def spooled_rows(worker_urls: Sequence[str]) -> int | None:
    """Frame rows the workers hold in their spools now (their /health); None if one did not say."""
    total = 0
    for url in worker_urls:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                total += int(json.load(resp)["database"]["spooled"])
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            return None
    return total


@dataclass
class BenchDatabase:
    """Usage: ``db = BenchDatabase.open(url or "")`` ... ``db.close()``."""
    url: str
    server: PostgresServer | None = None  # the one the benchmark started
    postmaster: psutil.Process | None = None  # None: the server's CPU is not measured
    notes: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, url: str = "") -> BenchDatabase:
        if url:
            pid = listening_pid(url)
            db = cls(url, postmaster=psutil.Process(pid) if pid else None)
            if pid is None:
                db.notes.append(f"no local process listens for {url}: the database server's CPU is not measured")
            db.count_frames()  # reachable and migrated? fail before any level
            return db
        try:
            server = PostgresServer(free_port())
        except PostgresUnavailable as exc:
            raise BenchError(f"--database needs PostgreSQL: {exc}") from exc
        try:
            server.start()
            return cls(server.url, server, psutil.Process(postmaster_pid(server.data_dir)))
        except PostgresUnavailable as exc:
            server.remove()
            raise BenchError(f"--database needs PostgreSQL: {exc}") from exc
        except (RuntimeError, subprocess.SubprocessError) as exc:
            server.remove()
            raise BenchError(f"the benchmark's PostgreSQL did not start: {exc}") from exc
        except BaseException:
            server.remove()
            raise

    def worker_args(self, spool_root: Path) -> list[str]:
        """Flags for every started worker: this database, and a spool directory of this run."""
        port = urlsplit(self.url).port or 5432
        return ["--database", self.url, "--spool-dir", str(spool_root / f"spool-{port}")]

    def count_frames(self) -> int:
        """Rows in the frames table (0 before any worker has created it)."""
        import psycopg  # only a --database run needs it
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
                exists = conn.execute("SELECT to_regclass('frames') IS NOT NULL").fetchone()
                if not (exists and exists[0]):
                    return 0
                row = conn.execute("SELECT count(*) FROM frames").fetchone()
                return int(row[0]) if row else 0
        except psycopg.Error as exc:
            raise BenchError(f"cannot count the frames in {self.url}: {exc}") from None

    def check_rows(self, before: int, answered: int, sent: int, worker_urls: Sequence[str],
                   drain_seconds: float = SPOOL_DRAIN_SECONDS) -> dict:
        """After a level: the rows it added, once the workers' spools are
        empty, against the frames answered - one row each. A frame sent but
        not answered (its reply came after the benchmark stopped waiting, or
        an error) may have a row too, so up to `sent` rows are consistent.
        "error" says what does not match, or that the database could not be
        read; the caller reports it as the level's, never raises it."""
        deadline = time.monotonic() + drain_seconds
        spooled = spooled_rows(worker_urls)
        while spooled and time.monotonic() < deadline:
            time.sleep(0.2)
            spooled = spooled_rows(worker_urls)
        result: dict = {"answered": answered, "spooled": spooled}
        try:
            result["rows"] = rows = self.count_frames() - before
        except BenchError as exc:
            result["rows"], result["error"] = None, str(exc)
            return result
        if not answered <= rows <= max(sent, answered):
            result["error"] = (f"the database holds {rows} rows for {answered} frames answered"
                               + (f" ({sent} sent)" if sent != answered else "")
                               + (f" ({spooled} still spooled)" if spooled else ""))
        elif rows > answered:
            # Rows of frames whose reply the benchmark did not see: those failed the level already.
            result["unanswered_rows"] = rows - answered
        return result

    def close(self) -> None:
        if self.server is not None:
            self.server.remove()
