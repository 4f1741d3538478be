"""What a run measures: BenchConfig and the command line that fills it."""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from voicetools.paths import RESULTS, SPEAKERS, SPEECH

from . import HELP, PROG
from .stats import Criteria

RESULTS_DIR = RESULTS
DATABASES = ("embedded", "postgresql", "compare")


@dataclass(frozen=True)
class BenchConfig:
    mode: str = "vad"
    streams: tuple[int, ...] = (10, 50, 100)
    seconds: float = 20.0
    warmup: float = 2.0
    find_max: bool = False
    start: int = 10
    step_factor: float = 1.5
    step_add: int = 0
    max_streams: int = 1000
    refine: int = 2
    criteria: Criteria = field(default_factory=Criteria)
    url: str = ""
    token: str = ""
    pids: str = ""
    n_workers: int = 3
    worker_ports: tuple[int, ...] = ()
    worker_args: tuple[str, ...] = ()
    balancer_args: tuple[str, ...] = ()
    speech_dir: Path = SPEECH
    speakers_dir: Path = SPEAKERS
    enroll_seconds: float = 4.0
    json_out: Path | None = None  # None: bench-results/bench-<mode>[-findmax].json
    plot: Path | None = None  # None: the same name, .png
    keep: bool = False
    seed: int = 0
    nice: int = 0
    quiet_below: float = 25.0
    quiet_timeout: float = 120.0
    probe_below: float = 0.0  # 0: do not wait for the CPU probe
    noisy_retries: int = 1
    database: str = "embedded"  # one of DATABASES
    database_url: str = ""  # "": the benchmark starts its own PostgreSQL when it needs one
    repeat: int = 1  # --database compare: runs of each level on each store

    @property
    def uses_postgresql(self) -> bool:
        return self.database != "embedded"

    def _default_result(self, extension: str) -> Path:
        suffix = "" if self.database == "embedded" else f"-{self.database}"
        return RESULTS_DIR / f"bench-{self.mode}{'-findmax' if self.find_max else ''}{suffix}.{extension}"

    @property
    def json_path(self) -> Path:
        return self.json_out or self._default_result("json")

    @property
    def plot_path(self) -> Path:
        return self.plot or self._default_result("png")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog=PROG, description=HELP.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(HELP.split("\n\n")[1:]))
    p.add_argument("--mode", choices=("vad", "speaker"), default=env("BENCH_MODE", "vad"),
                   help="vad: workers --encoder none; speaker: --encoder ge2e and 2 enrolled speakers per account")
    p.add_argument("--streams", type=_int_list, default=_int_list("10,50,100"),
                   help="levels to run, comma-separated N (default: 10,50,100)")
    p.add_argument("--seconds", type=float, help="measured seconds per level (default: 20, or 10 with --find-max)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds streamed before measuring (default: 2)")
    p.add_argument("--find-max", action="store_true", help="raise N until a level fails; report the largest that held")
    p.add_argument("--start", type=int, default=10, help="--find-max: first N (default: 10)")
    p.add_argument("--step-factor", type=float, default=1.5, help="--find-max: multiply N by this (default: 1.5)")
    p.add_argument("--step-add", type=int, default=0, help="--find-max: add this to N instead of multiplying")
    p.add_argument("--max-streams", type=int, default=1000, help="--find-max: stop here (balancer default limit 1000)")
    p.add_argument("--refine", type=int, default=2,
                   help="--find-max: bisection levels between the last N held and the first failed (default: 2)")
    p.add_argument("--p99-bound-ms", type=float, default=100.0,
                   help="a level holds while p99 e2e <= this (default: 100)")
    p.add_argument("--late-tolerance", type=float, default=0.01,
                   help="share of one stream's frames that may be late before it counts as behind (default: 0.01)")
    p.add_argument("--url", default=env("BENCH_URL", ""),
                   help="use a running balancer (http://host:port) instead of starting one [BENCH_URL]")
    p.add_argument("--token", default=env("AUTH_TOKEN", ""), help="balancer token, if it wants one [AUTH_TOKEN]")
    p.add_argument("--pids", default="",
                   help="with --url: processes to measure, NAME=PID or PID comma-separated (children included)")
    p.add_argument("--n-workers", type=int, default=3, help="workers to start (default: 3)")
    p.add_argument("--worker-ports", type=_int_list, default=(),
                   help="ports for the started workers, comma-separated (default: free ports); accounts spread "
                        "over workers by a hash of their URLs, so fixed ports make runs comparable")
    p.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                   help="extra worker flag, repeatable: --worker-arg=--threads --worker-arg=8")
    p.add_argument("--balancer-arg", action="append", default=[], metavar="ARG", help="extra balancer flag, repeatable")
    p.add_argument("--speech-dir", type=Path, default=SPEECH, help=f"WAVs to stream (default: {SPEECH}, else data/)")
    p.add_argument("--speakers-dir", type=Path, default=SPEAKERS,
                   help=f"speaker mode: one directory of WAVs per speaker (default: {SPEAKERS})")
    p.add_argument("--enroll-seconds", type=float, default=4.0, help="speaker mode: speech per enrollment (default: 4)")
    p.add_argument("--json-out", type=Path, help=f"results JSON (default: {RESULTS_DIR}/bench-<mode>.json)")
    p.add_argument("--plot", type=Path, help=f"latency-vs-N PNG (default: {RESULTS_DIR}/bench-<mode>.png)")
    p.add_argument("--keep", action="store_true", help="keep the started system's temporary directory (logs)")
    p.add_argument("--seed", type=int, default=0, help="seed of stream offsets and start frames")
    p.add_argument("--nice", type=int, default=0,
                   help="run the started system and this client at this nice value; e.g. -10 on a machine "
                        "shared with other work (needs root); not allowed with --url")
    p.add_argument("--quiet-below", type=float, default=25.0,
                   help="CPU (%% of one core) other processes may use during a level (default: 25)")
    p.add_argument("--quiet-timeout", type=float, default=120.0,
                   help="before each level, wait up to this many seconds for the machine to be quiet; 0: never wait")
    p.add_argument("--probe-below", type=float, default=0.0,
                   help="also wait (within --quiet-timeout) until the CPU probe takes at most this many ms; "
                        "0: never (default)")
    p.add_argument("--noisy-retries", type=int, default=1,
                   help="rerun a level this many times when other load exceeded --quiet-below (default: 1)")
    p.add_argument("--database", choices=DATABASES, default=env("BENCH_DATABASE", "embedded"),
                   help="where the started workers keep every frame's result: embedded (this host's files, the "
                        "default), postgresql (worker --database: a PostgreSQL the benchmark starts, or "
                        "--database-url), or compare: each level on both, back to back, on the same worker ports "
                        "(restarted for each run), the order alternating from one pair of runs to the next "
                        "(embedded first, then PostgreSQL first, ...) so a drifting machine favours neither "
                        "[BENCH_DATABASE]")
    p.add_argument("--repeat", type=int, default=1,
                   help="--database compare: run each level this many times on each store (pairs in alternating "
                        "order) and compare the medians (default: 1)")
    p.add_argument("--database-url", default=env("BENCH_DATABASE_URL", ""),
                   help="with --database postgresql/compare: use this PostgreSQL instead of starting one; its "
                        "server's CPU is measured only when it listens on this machine [BENCH_DATABASE_URL]")
    return p


def parse_args(argv: Sequence[str] | None = None) -> BenchConfig:
    p = build_parser()
    a = p.parse_args(argv)
    if a.seconds is not None and a.seconds <= 0:
        p.error("--seconds must be positive")
    if a.step_factor <= 1 and a.step_add <= 0:
        p.error("--step-factor must be > 1 (or give --step-add)")
    if a.pids and not a.url:
        p.error("--pids goes with --url; a started system is measured anyway")
    if a.nice and a.url:
        p.error("--nice applies only to a system the benchmark starts, not to --url")
    if a.database not in DATABASES:  # from BENCH_DATABASE: argparse checks only given choices
        p.error(f"--database must be one of {', '.join(DATABASES)}, got {a.database!r}")
    if a.database != "embedded" and a.url:
        p.error("--database applies to a system the benchmark starts, not to --url")
    if a.database_url and a.database == "embedded":
        p.error("--database-url goes with --database postgresql or compare")
    if a.database == "compare" and a.find_max:
        p.error("--database compare runs the levels of --streams; it does not combine with --find-max")
    if a.repeat < 1 or (a.repeat > 1 and a.database != "compare"):
        p.error("--repeat must be >= 1 and goes with --database compare")
    seconds = a.seconds if a.seconds is not None else (10.0 if a.find_max else 20.0)
    return BenchConfig(
        mode=a.mode, streams=a.streams, seconds=seconds, warmup=a.warmup, find_max=a.find_max, start=a.start,
        step_factor=a.step_factor, step_add=a.step_add, max_streams=a.max_streams, refine=a.refine,
        criteria=Criteria(a.p99_bound_ms, a.late_tolerance), url=a.url, token=a.token, pids=a.pids,
        n_workers=len(a.worker_ports) or a.n_workers, worker_ports=a.worker_ports,
        worker_args=tuple(a.worker_arg), balancer_args=tuple(a.balancer_arg),
        speech_dir=a.speech_dir, speakers_dir=a.speakers_dir, enroll_seconds=a.enroll_seconds,
        json_out=a.json_out, plot=a.plot,
        keep=a.keep, seed=a.seed, nice=a.nice, quiet_below=a.quiet_below, quiet_timeout=a.quiet_timeout,
        probe_below=a.probe_below, noisy_retries=a.noisy_retries, database=a.database,
        database_url=a.database_url, repeat=a.repeat)
