"""The system a run starts: its workers' flags for the mode and the
database, its ports, and the processes measured while it serves."""
from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from voicetools.cluster import System, free_port, make_system

from . import BenchError
from .config import BenchConfig
from .database import BenchDatabase
from .processes import CLIENT, DATABASE_SERVER, ProcessWatch, renice, system_processes


def worker_args_for(config: BenchConfig, root: Path, database: BenchDatabase | None = None) -> list[str]:
    if config.mode == "vad":
        mode_args = ["--encoder", "none"]
    else:
        mode_args = ["--encoder", "ge2e", "--store", str(root / "voiceprints.db"),
                     "--activity-log", str(root / "logs" / "activity.log")]
    database_args = database.worker_args(root) if database else []
    return [*mode_args, *database_args, *config.worker_args]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        # As the servers bind: connections of an earlier run in TIME_WAIT do
        # not count, a listening socket does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Ports:
    """The ports of a system started more than once (--database compare):
    rendezvous hashing ranks worker URLs, ports included, so the same ports
    give every start the same account spread."""
    workers: tuple[int, ...]
    balancer: int

    @classmethod
    def choose(cls, config: BenchConfig) -> Ports:
        return cls(config.worker_ports or tuple(free_port() for _ in range(config.n_workers)), free_port())


def _require_free(ports: Sequence[int], what: str) -> None:
    busy = [port for port in ports if not port_free(port)]
    if busy:
        # A worker that cannot bind keeps retrying while whatever
        # holds the port answers its health checks.
        raise BenchError(f"{what}: {', '.join(map(str, busy))} already in use")


def configured_system(config: BenchConfig, root: Path, database: BenchDatabase | None = None,
                      ports: Ports | None = None) -> System:
    """The system to start: its workers for the mode (and the database), on
    ports if given, else on --worker-ports if given."""
    system = make_system(root, n_workers=config.n_workers, worker_args=worker_args_for(config, root, database),
                         balancer_args=list(config.balancer_args))
    if ports is not None:
        _require_free([*ports.workers, ports.balancer], "ports of the benchmarked system")
        system.worker_ports, system.balancer_port = list(ports.workers), ports.balancer
    elif config.worker_ports:
        # Fixed ports give the same account spread on every run.
        _require_free(config.worker_ports, "--worker-ports")
        system.worker_ports = list(config.worker_ports)
    return system


def watch_system(config: BenchConfig, system: System, database: BenchDatabase | None) -> ProcessWatch:
    """The started system's processes, this client and the database server
    (its whole process tree, one entry) to measure; reniced with --nice."""
    processes = system_processes(system)
    processes[CLIENT] = psutil.Process()
    server = database.postmaster if database else None
    if config.nice:
        ours = [*processes.values()]
        if server is not None and database is not None and database.server is not None:
            ours += [server, *server.children(recursive=True)]
        for note in renice(ours, config.nice):
            print(f"note: {note}", flush=True)
    print("measuring " + ", ".join(f"{name}={p.pid}" for name, p in processes.items())
          + (f", {DATABASE_SERVER}={server.pid} and its children" if server else ""), flush=True)
    return ProcessWatch(processes, {DATABASE_SERVER: server} if server else None)
