"""A throwaway PostgreSQL server for tests and benchmarks, from the machine's
own binaries: initdb into a fresh directory, one loopback address, a free
port, trust authentication. Never a server that holds real data.

    .venv/bin/voicestream-postgres --port 55432      # start one, print its URL, wait for Ctrl-C

initdb refuses to run as root, so as root the server runs as the `postgres`
user (Debian's postgresql package creates it), in a directory that user owns.
"""
from __future__ import annotations

import argparse
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

DATABASE = "voicestream"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here; the message says what to install."""


def server_bindir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin with initdb, or PATH's."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresUnavailable("PostgreSQL server binaries not found (initdb): apt-get install postgresql")


def _as_user() -> list[str]:
    """How to run a server command: as `postgres` when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root needs the 'postgres' user to run initdb: "
                                  "apt-get install postgresql creates it") from None
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class PostgresServer:
    port: int
    host: str = "127.0.0.1"
    # bindir before root: without binaries no temporary directory is left behind.
    bindir: Path = field(default_factory=server_bindir)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="voicestream-pg-")))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{DATABASE}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_as_user(), *args], capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        return self

    def start(self) -> PostgresServer:
        if not self.data_dir.exists():
            self.init()
        options = (f"-p {self.port} -k {self.root} -c listen_addresses={self.host} -c fsync=off "
                   "-c max_connections=200 -c shared_buffers=64MB")
        done = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
                         "-o", options, "-w", "-t", "60", "start", check=False)
        if done.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {done.stderr.strip()}\n{self.log()[-2000:]}")
        exists = self._run(str(self.bindir / "psql"), "-h", self.host, "-p", str(self.port), "-U", "postgres",
                           "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        if exists.stdout.strip() != "1":
            self._run(str(self.bindir / "createdb"), "-h", self.host, "-p", str(self.port), "-U", "postgres", DATABASE)
        return self

    def stop(self, mode: str = "fast") -> None:
        """mode: fast (clients disconnected, clean), immediate (as a crash)."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="voicestream-postgres",
                                description="Start a throwaway PostgreSQL server on loopback.")
    p.add_argument("--port", type=int, default=55432)
    p.add_argument("--host", default="127.0.0.1")
    a = p.parse_args()
    # Blocked first: sigwait only receives signals that are blocked, and an
    # unblocked SIGTERM would end the tool before remove() stops the server.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    server = PostgresServer(a.port, a.host).start()
    print(server.url, flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.remove()


if __name__ == "__main__":
    main()
