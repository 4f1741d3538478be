"""The processes a level is measured on: their CPU over the measuring window
and peak memory, the whole machine's CPU (other load skews every figure),
their scheduling priority, and a probe of how fast this machine runs now."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from voicetools.cluster import System

from . import BenchError

# Per process name: pid, cpu_pct, cpu_system_pct, rss_peak_mb, hwm_mb, gone;
# a process tree (the database server) has pid, cpu_pct, cpu_system_pct, processes.
ProcessUsage = dict[str, dict[str, Any]]
# Whole machine: busy_pct, process_cpu_pct, irq_cpu_pct.
MachineUsage = dict[str, float]
Usage = tuple[ProcessUsage, MachineUsage]

CLIENT = "client"  # this benchmark's own process: the load, not the served system
DATABASE_SERVER = "postgresql"  # the database server's processes, one entry: not the served system either


@dataclass
class Watched:
    name: str
    process: psutil.Process
    cpu_start: tuple[float, float] = (0.0, 0.0)
    rss_peak: int = 0
    gone: bool = False


def hwm_bytes(pid: int) -> int | None:
    """Peak RSS over the process's life (Linux VmHWM)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cpu_seconds(p: psutil.Process) -> tuple[float, float]:
    t = p.cpu_times()
    return t.user, t.system


def tree_cpu_seconds(root: psutil.Process) -> tuple[float, float, int]:
    """(user, system) CPU seconds root and all its descendants have used, and
    how many processes are alive. A process's children_user/children_system
    hold the CPU of the children it has reaped, so a PostgreSQL backend or
    autovacuum worker that came and went between two calls still counts."""
    user = system = 0.0
    alive = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue  # exited just now: its parent's children_* holds it once reaped
        user += t.user + t.children_user
        system += t.system + t.children_system
        alive += 1
    return user, system, alive


@dataclass
class WatchedTree:
    """A server of many short- and long-lived processes (PostgreSQL: a
    postmaster and a backend per connection), measured as one entry."""
    name: str
    root: psutil.Process
    cpu_start: tuple[float, float] = (0.0, 0.0)
    gone: bool = False


class ProcessWatch:
    """CPU over the measuring window and peak RSS of the benchmarked
    processes, and the CPU of whole process trees (trees: name -> root)."""

    def __init__(self, processes: dict[str, psutil.Process], trees: dict[str, psutil.Process] | None = None) -> None:
        self.watched = [Watched(name, p) for name, p in processes.items()]
        self.trees = [WatchedTree(name, root) for name, root in (trees or {}).items()]
        self.started = 0.0
        self.machine_start = psutil.cpu_times()

    def begin(self) -> None:
        self.started = time.monotonic()
        self.machine_start = psutil.cpu_times()
        for w in self.watched:
            w.rss_peak, w.gone = 0, False
            try:
                w.cpu_start = _cpu_seconds(w.process)
            except psutil.Error:
                w.gone = True
        for t in self.trees:
            try:
                user, system, _ = tree_cpu_seconds(t.root)
                t.cpu_start, t.gone = (user, system), False
            except psutil.Error:
                t.gone = True
        self.sample()

    def sample(self) -> None:
        for w in self.watched:
            if not w.gone:
                try:
                    w.rss_peak = max(w.rss_peak, w.process.memory_info().rss)
                except psutil.Error:
                    w.gone = True

    def end(self) -> Usage:
        self.sample()
        wall = max(time.monotonic() - self.started, 1e-9)
        out: ProcessUsage = {}
        for w in self.watched:
            entry: dict[str, Any] = {"pid": w.process.pid}
            try:
                user, system = (end - start for end, start in zip(_cpu_seconds(w.process), w.cpu_start, strict=True))
                entry["cpu_pct"] = round((user + system) / wall * 100, 1)
                # Kernel time (sockets, file locks, futexes) apart from user time.
                entry["cpu_system_pct"] = round(system / wall * 100, 1)
            except psutil.Error:
                w.gone = True
            if w.gone:
                entry["gone"] = True
            entry["rss_peak_mb"] = round(w.rss_peak / 2**20, 1)
            hwm = hwm_bytes(w.process.pid)
            if hwm is not None and not w.gone:
                entry["hwm_mb"] = round(hwm / 2**20, 1)
            out[w.name] = entry
        for t in self.trees:
            tree: dict[str, Any] = {"pid": t.root.pid}
            try:
                user, system, alive = tree_cpu_seconds(t.root)
                tree["cpu_pct"] = round((user + system - sum(t.cpu_start)) / wall * 100, 1)
                tree["cpu_system_pct"] = round((system - t.cpu_start[1]) / wall * 100, 1)
                tree["processes"] = alive
            except psutil.Error:
                t.gone = True
            if t.gone:
                tree["gone"] = True
            out[t.name] = tree
        return out, machine_usage(self.machine_start, psutil.cpu_times(), wall)


def other_cpu_pct(processes: ProcessUsage, machine: MachineUsage) -> float:
    """CPU (of one core) that processes outside the benchmark used: other
    load on the machine skews every figure, so it is reported."""
    ours = sum(p.get("cpu_pct", 0.0) for p in processes.values())
    return round(max(machine["process_cpu_pct"] - ours, 0.0), 1)


def machine_usage(start: Any, end: Any, wall: float) -> MachineUsage:
    """Whole-machine CPU between two psutil.cpu_times(): busy share of all
    cores, and in % of one core the time processes ran (user + system) and the
    time the kernel spent in interrupts (loopback networking runs there)."""
    delta = {f: getattr(end, f) - getattr(start, f) for f in end._fields}
    total = sum(delta.values())
    idle = delta["idle"] + delta.get("iowait", 0.0)
    irq = delta.get("irq", 0.0) + delta.get("softirq", 0.0)
    return {"busy_pct": round((total - idle) / total * 100, 1) if total > 0 else 0.0,
            "process_cpu_pct": round((delta["user"] + delta.get("nice", 0.0) + delta["system"]) / wall * 100, 1),
            "irq_cpu_pct": round(irq / wall * 100, 1)}


def cpu_probe_ms(repeats: int = 5) -> float:
    """Best time of a fixed pure-Python loop. On a virtual machine the host's
    other tenants can slow every core without any process here showing it;
    comparing this figure between levels and runs shows when that happened."""
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for i in range(200_000):
            total += i * i
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 2)


def system_processes(system: System) -> dict[str, psutil.Process]:
    """The balancer, each worker's gunicorn master and its child(ren)."""
    if system.balancer is None:
        raise BenchError("the system is not started")
    procs = {"balancer": psutil.Process(system.balancer.pid)}
    for port, worker in zip(system.worker_ports, system.workers, strict=True):
        tree = process_tree(f"w{port}", worker.pid)
        if len(tree) < 2:
            raise BenchError(f"worker on port {port} has no serving process (see its output in {system.root})")
        procs.update(tree)
    return procs


def process_tree(name: str, pid: int) -> dict[str, psutil.Process]:
    """pid as name, or when it has children: name-master and each child."""
    root = psutil.Process(pid)
    children = root.children(recursive=True)
    if not children:
        return {name: root}
    procs = {f"{name}-master": root}
    for i, child in enumerate(children):
        procs[name if len(children) == 1 else f"{name}-{i}"] = child
    return procs


def parse_pids(text: str) -> dict[str, psutil.Process]:
    """'balancer=123,w1=456' or '123,456' -> processes (children included)."""
    procs: dict[str, psutil.Process] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, pid = part.rpartition("=")
        if not pid.isdigit():
            raise BenchError(f"--pids wants NAME=PID or PID items, got {part!r}")
        try:
            procs.update(process_tree(name if sep else f"pid{pid}", int(pid)))
        except psutil.NoSuchProcess:
            raise BenchError(f"--pids: no process {pid}") from None
    return procs


def renice(processes: Iterable[psutil.Process], nice: int) -> list[str]:
    """Raise (negative) or lower the priority of the processes this benchmark
    started: on a machine shared with other work, a negative value keeps that
    work from skewing the figures (a dedicated machine has none). Returns
    notes on processes whose share could not be fully changed."""
    notes = []
    for p in processes:
        try:
            # Linux priorities are per thread: set every existing one (threads
            # started later inherit their creator's).
            for thread in p.threads():
                os.setpriority(os.PRIO_PROCESS, thread.id, nice)
            # With autogroup scheduling, CPU is shared fairly between sessions
            # first and nice only orders threads within one; a process that
            # leads its own session (the started system) sets its group's nice.
            autogroup = Path(f"/proc/{p.pid}/autogroup")
            if autogroup.exists():
                if os.getsid(p.pid) == p.pid:
                    autogroup.write_text(str(nice))
                elif p.pid == os.getpid():
                    notes.append("the client shares its session's autogroup, so --nice barely raises its "
                                 "share against other sessions; run it under `setsid` for that")
        except PermissionError:
            raise BenchError(f"--nice {nice}: not allowed to set priority {nice} (negative values need root)") from None
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
    return notes
