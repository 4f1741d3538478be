"""A benchmark run: start (or reach) the system, run each level, report."""
from __future__ import annotations

import asyncio
import json
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType

import psutil

from cluster import REPO, System, make_system

from . import BenchError
from .audio import (
    Speaker,
    StreamSource,
    account_speakers,
    describe_sources,
    load_speakers,
    load_speech_sources,
    speaker_source,
    speech_files,
)
from .config import BenchConfig, parse_args
from .processes import ProcessWatch, cpu_probe_ms, other_cpu_pct, parse_pids, renice, system_processes
from .report import format_table, level_line, write_plot
from .search import find_max
from .stats import RATE_TOLERANCE, LevelPlan
from .streams import Target, enroll_accounts, run_level

QUIET_SAMPLE_SECONDS = 1.0  # the machine counts as quiet when one such second is


def worker_args_for(config: BenchConfig, root: Path) -> list[str]:
    if config.mode == "vad":
        mode_args = ["--encoder", "none"]
    else:
        mode_args = ["--encoder", "ge2e", "--store", str(root / "voiceprints.db"),
                     "--activity-log", str(root / "logs" / "activity.log")]
    return [*mode_args, *config.worker_args]


class Bench:
    """Runs levels against one target: enrolls speaker-mode accounts once,
    waits for a quiet machine, reruns a level that other load disturbed."""

    def __init__(self, config: BenchConfig, target: Target, watch: ProcessWatch | None,
                 audio: tuple[list[Speaker], list[StreamSource]]) -> None:
        self.config = config
        self.target = target
        self.watch = watch
        self.enrolled: set[int] = set()
        self.speakers, self.speech_sources = audio

    def sources(self, n: int) -> list[StreamSource]:
        if self.config.mode == "vad":
            return self.speech_sources
        # One source per account: its own enrolled speakers, in account order.
        return [speaker_source(account_speakers(i, self.speakers)) for i in range(n)]

    def wait_quiet(self) -> None:
        """Other load on the machine (a test run, a build) skews every figure:
        wait, up to quiet_timeout, for a second in which it stays below quiet_below."""
        c = self.config
        if self.watch is None or c.quiet_timeout <= 0:
            return
        deadline, told = time.monotonic() + c.quiet_timeout, False
        while True:
            self.watch.begin()
            time.sleep(QUIET_SAMPLE_SECONDS)  # the measurement itself: CPU used over this second
            other = other_cpu_pct(*self.watch.end())
            probe = cpu_probe_ms() if c.probe_below else 0.0
            if other <= c.quiet_below and probe <= c.probe_below:
                return
            state = f"{other:.0f}% of a core outside the benchmark"
            if c.probe_below:
                state += f", CPU probe {probe:.1f} ms"
            if time.monotonic() > deadline:
                print(f"  machine still busy ({state}); measuring anyway", flush=True)
                return
            if not told:
                print(f"  waiting for a quiet machine (now {state}) ...", flush=True)
                told = True

    def run(self, n: int) -> dict:
        attempts = []
        for attempt in range(1 + self.config.noisy_retries):
            self.wait_quiet()
            level = self.run_once(n)
            attempts.append(level)
            if not self.noisy(level):
                break
            if attempt < self.config.noisy_retries:
                print("  rerunning this level: the machine was busy with other work", flush=True)
        # A quiet attempt is the measurement. Among noisy ones, other load can
        # only have made things worse, so one that held is the better estimate.
        level = min(attempts, key=lambda lv: (self.noisy(lv), not lv["held"], lv["other_cpu_pct"] or 0))
        level["attempts"] = len(attempts)
        return level

    def noisy(self, level: dict) -> bool:
        c = self.config
        return ((level["other_cpu_pct"] or 0) > c.quiet_below
                or bool(c.probe_below and max(level["cpu_probe_ms"]) > c.probe_below))

    def run_once(self, n: int) -> dict:
        if self.config.mode == "speaker":
            missing = [i for i in range(n) if i not in self.enrolled]
            if missing:
                print(f"enrolling 2 speakers in each of {len(missing)} accounts ...", flush=True)
                asyncio.run(enroll_accounts(self.target, missing, self.speakers))
                self.enrolled.update(missing)
        print(f"N={n}: {self.config.warmup:g} s warm-up + {self.config.seconds:g} s ...", flush=True)
        plan = LevelPlan(n, self.config.seconds, self.config.warmup, seed=self.config.seed)
        probe_before = cpu_probe_ms()
        level = asyncio.run(run_level(plan, self.target, self.sources(n), self.watch, self.config.criteria))
        level["cpu_probe_ms"] = [probe_before, cpu_probe_ms()]
        print(level_line(level), flush=True)
        if (level["other_cpu_pct"] or 0) > self.config.quiet_below:
            print(f"  warning: processes outside the benchmark used {level['other_cpu_pct']:.0f}% of a core "
                  "during this level; the figures are skewed", flush=True)
        for message, count in level["error_messages"].items():
            print(f"  error x{count}: {message}", flush=True)
        return level


def load_audio(config: BenchConfig) -> tuple[list[Speaker], list[StreamSource]]:
    """Speakers to enroll (speaker mode) and recordings to stream (vad mode),
    read before any process starts so a missing file fails fast."""
    if config.mode == "speaker":
        return load_speakers(config.speakers_dir, config.enroll_seconds), []
    return [], load_speech_sources(speech_files(config.speech_dir))


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


def code_version() -> dict:
    """The commit measured and whether the checkout had uncommitted changes
    (the benchmark runs whatever code is checked out)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return {"commit": None, "repo": str(REPO), "note": "not a git checkout"}
    changed = [line[3:] for line in git("status", "--porcelain", "--", "balancer", "worker").splitlines()]
    return {"commit": commit, "repo": str(REPO), "uncommitted_in_balancer_worker": changed}


def configured_system(config: BenchConfig, root: Path) -> System:
    """The system to start: its workers for the mode, on --worker-ports if given."""
    system = make_system(root, n_workers=config.n_workers, worker_args=worker_args_for(config, root),
                         balancer_args=list(config.balancer_args))
    if config.worker_ports:
        # Rendezvous hashing ranks worker URLs, ports included: fixed
        # ports give the same account spread on every run.
        busy = [port for port in config.worker_ports if not port_free(port)]
        if busy:
            # A worker that cannot bind keeps retrying while whatever
            # holds the port answers its health checks.
            raise BenchError(f"--worker-ports: {', '.join(map(str, busy))} already in use")
        system.worker_ports = list(config.worker_ports)
    return system


def run_bench(config: BenchConfig) -> dict:
    """Every level (or --find-max) against the started or given system; the results."""
    system: System | None = None
    root: Path | None = None
    audio = load_audio(config)
    try:
        if config.url:
            target = Target.from_url(config.url, config.token)
            processes = parse_pids(config.pids) if config.pids else {}
        else:
            root = Path(tempfile.mkdtemp(prefix="bench-"))
            system = configured_system(config, root)
            print(f"starting {config.n_workers} workers ({config.mode}) and the balancer in {root} ...", flush=True)
            # Assigned before it starts: processes of a failed start are stopped too.
            system.start()
            target = Target(system.url, system.ws_url, config.token)
            processes = system_processes(system)
        processes["client"] = psutil.Process()
        if config.nice:
            for note in renice(processes.values(), config.nice):
                print(f"note: {note}", flush=True)
        print("measuring " + ", ".join(f"{name}={p.pid}" for name, p in processes.items()), flush=True)
        watch = ProcessWatch(processes)
        bench = Bench(config, target, watch, audio)
        sources = describe_sources(*audio)
        print("streaming: " + ", ".join(sources), flush=True)
        if config.find_max:
            held, levels = find_max(bench.run, config.start, config.step_factor, config.step_add,
                                    config.max_streams, config.refine)
        else:
            levels = [bench.run(n) for n in config.streams]
            held = max((lv["n"] for lv in levels if lv["held"]), default=None)
        return {
            "mode": config.mode, "started_system": system is not None, "url": target.http_url,
            "n_workers": config.n_workers if system else None, "nice": config.nice,
            "worker_args": worker_args_for(config, Path("<tmp>")) if system else None,
            "criteria": asdict(config.criteria) | {"rate_tolerance": RATE_TOLERANCE},
            "find_max": config.find_max, "max_n_held": held, "sources": sources,
            "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "code": code_version(), "levels": levels,
        }
    finally:
        if system is not None:
            system.stop()
        if root is not None:
            if config.keep:
                print(f"kept {root}", flush=True)
            else:
                shutil.rmtree(root, ignore_errors=True)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    # Stop the started system on Ctrl-C or kill, also when run in the background
    # (where a shell leaves SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        result = run_bench(config)
    except BenchError as exc:
        print(f"bench.py: {exc}", file=sys.stderr)
        return 2
    levels = result["levels"]
    title = f"{config.mode}: {'find-max' if config.find_max else 'levels'}, {config.seconds:g} s per level"
    print()
    print(title)
    print(format_table(levels))
    if config.find_max:
        print(f"\nlargest N that held: {result['max_n_held']} "
              f"(p99 <= {config.criteria.p99_bound_ms:g} ms, real time kept, no errors)")
    config.json_path.parent.mkdir(parents=True, exist_ok=True)
    config.json_path.write_text(json.dumps(result, indent=2) + "\n")
    write_plot(levels, config.plot_path, title, config.criteria.p99_bound_ms)
    print(f"\nwrote {config.json_path} and {config.plot_path}")
    return 0
