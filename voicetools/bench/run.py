"""A benchmark run: start (or reach) the system, run each level, report."""
from __future__ import annotations

import json
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType

import psutil

from voicetools.cluster import System
from voicetools.paths import REPO

from . import PROG, BenchError
from .audio import Speaker, StreamSource, describe_sources, load_speakers, load_speech_sources, speech_files
from .compare import SIDES, run_compare
from .config import BenchConfig, parse_args
from .database import BenchDatabase
from .levels import Bench
from .processes import CLIENT, ProcessWatch, parse_pids
from .report import format_comparison, format_table, write_plot
from .search import find_max
from .stats import RATE_TOLERANCE
from .streams import Target
from .systems import configured_system, watch_system, worker_args_for

Audio = tuple[list[Speaker], list[StreamSource]]


def load_audio(config: BenchConfig) -> Audio:
    """Speakers to enroll (speaker mode) and recordings to stream (vad mode),
    read before any process starts so a missing file fails fast."""
    if config.mode == "speaker":
        return load_speakers(config.speakers_dir, config.enroll_seconds), []
    return [], load_speech_sources(speech_files(config.speech_dir))


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


def run_levels(config: BenchConfig, bench: Bench) -> tuple[int | None, list[dict]]:
    """--find-max or the levels of --streams on one system; (largest N held, levels)."""
    if config.find_max:
        return find_max(bench.run, config.start, config.step_factor, config.step_add, config.max_streams,
                        config.refine)
    levels = [bench.run(n) for n in config.streams]
    return max((lv["n"] for lv in levels if lv["held"]), default=None), levels


def run_given(config: BenchConfig, audio: Audio) -> tuple[int | None, list[dict]]:
    """Levels against the running system at --url, measuring --pids."""
    processes = parse_pids(config.pids) if config.pids else {}
    processes[CLIENT] = psutil.Process()
    print("measuring " + ", ".join(f"{name}={p.pid}" for name, p in processes.items()), flush=True)
    target = Target.from_url(config.url, config.token)
    return run_levels(config, Bench(config, target, ProcessWatch(processes), audio))


def run_started(config: BenchConfig, root: Path, database: BenchDatabase | None,
                audio: Audio) -> tuple[int | None, list[dict]]:
    """Levels against a system started once in root (on database, if given)."""
    system: System = configured_system(config, root, database)
    print(f"starting {config.n_workers} workers ({config.mode}) and the balancer in {root} ...", flush=True)
    try:
        system.start()  # a failed start stops whatever it started
        target = Target(system.url, system.ws_url, config.token)
        worker_urls = [system.worker_url(i) for i in range(len(system.worker_ports))]
        bench = Bench(config, target, watch_system(config, system, database), audio, database, worker_urls)
        return run_levels(config, bench)
    finally:
        system.stop()


def run_bench(config: BenchConfig) -> dict:
    """Every level (or --find-max) against the started or given system; the results."""
    audio = load_audio(config)
    database: BenchDatabase | None = None
    root: Path | None = None
    comparison: list[dict] | None = None
    held: int | None = None
    try:
        if config.uses_postgresql:
            database = BenchDatabase.open(config.database_url)
            print(f"PostgreSQL: {database.url}", flush=True)
            for note in database.notes:
                print(f"note: {note}", flush=True)
        print("streaming: " + ", ".join(describe_sources(*audio)), flush=True)
        if config.url:
            held, levels = run_given(config, audio)
        else:
            root = Path(tempfile.mkdtemp(prefix="bench-"))
            if config.database == "compare" and database is not None:
                levels, comparison = run_compare(config, root, database, audio)
            else:
                held, levels = run_started(config, root, database, audio)
                for level in levels:
                    level["database"] = config.database
        return {
            "mode": config.mode, "database": config.database, "started_system": not config.url,
            "url": config.url or None, "n_workers": None if config.url else config.n_workers, "nice": config.nice,
            "worker_args": None if config.url else worker_args_for(config, Path("<tmp>")),
            "database_server_measured": None if database is None else database.postmaster is not None,
            "criteria": asdict(config.criteria) | {"rate_tolerance": RATE_TOLERANCE},
            "find_max": config.find_max, "max_n_held": held, "sources": describe_sources(*audio),
            "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "code": code_version(), "levels": levels,
            **({"comparison": comparison} if comparison is not None else {}),
        }
    finally:
        if database is not None:
            database.close()
        if root is not None:
            if config.keep:
                print(f"kept {root}", flush=True)
            else:
                shutil.rmtree(root, ignore_errors=True)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def side_path(path: Path, side: str) -> Path:
    """bench-vad-compare.png -> bench-vad-compare-embedded.png"""
    return path.with_name(f"{path.stem}-{side}{path.suffix}")


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    # Stop the started system on Ctrl-C or kill, also when run in the background
    # (where a shell leaves SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        result = run_bench(config)
    except BenchError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    levels = result["levels"]
    title = f"{config.mode}: {'find-max' if config.find_max else 'levels'}, {config.seconds:g} s per level"
    config.json_path.parent.mkdir(parents=True, exist_ok=True)
    config.json_path.write_text(json.dumps(result, indent=2) + "\n")
    if "comparison" in result:
        plots = []
        for side in SIDES:
            side_levels = [lv for lv in levels if lv["database"] == side]
            print(f"\n{title}, {side}")
            print(format_table(side_levels))
            plots.append(side_path(config.plot_path, side))
            write_plot(side_levels, plots[-1], f"{title}, {side}", config.criteria.p99_bound_ms)
        print(f"\n{title}: PostgreSQL (--database) against the embedded store")
        print(format_comparison(result["comparison"]))
        print(f"\nwrote {config.json_path}, {plots[0]} and {plots[1]}")
        return 0
    print()
    print(title)
    print(format_table(levels))
    if config.find_max:
        print(f"\nlargest N that held: {result['max_n_held']} "
              f"(p99 <= {config.criteria.p99_bound_ms:g} ms, real time kept, no errors)")
    write_plot(levels, config.plot_path, title, config.criteria.p99_bound_ms)
    print(f"\nwrote {config.json_path} and {config.plot_path}")
    return 0
