#!/usr/bin/env python3
"""Load benchmark: how many live streams one machine holds.

    .venv/bin/python scripts/bench.py --mode vad --streams 10,50,100 --seconds 20
    .venv/bin/python scripts/bench.py --mode vad --find-max
    .venv/bin/python scripts/bench.py --mode speaker --streams 5,10,20
    .venv/bin/python scripts/bench.py --url http://127.0.0.1:6001 --pids balancer=1234,w1=2345
    # on a shared machine: fixed ports (same account spread every run), wait
    # for other load to stop and for the host to run at full speed
    .venv/bin/python scripts/bench.py --find-max --worker-ports 7101,7102,7103 \
        --quiet-timeout 600 --probe-below 8 --noisy-retries 2

Without --url it starts the real system (3 workers + balancer, scripts/cluster.py)
on free ports in a temporary directory and stops it afterwards. Each of N
streams is one WebSocket connection and one account; it sends 100 ms WAV frames
of real speech ("ACCOUNTCODE=..." text part, then the WAV) at real-time pace,
scheduled on a monotonic clock with a random start offset within the first
100 ms, without waiting for replies (a live source does not wait). Replies are
matched to frames by the balancer's per-connection seq.

Measured per level, over T seconds after a warm-up:
  frames/s     replies that arrived in the window / T
  e2e          client send -> reply arrival, per frame
  model        the reply's "ms" (the worker's model time for the frame's batch)
  late         frames whose reply came after the next frame was due (or never)
  errors       error replies + frames unanswered 5 s after the last send ("lost")
               + streams that could not connect
  send lag     client's own slip behind its schedule (a busy client shows here)
  busiest wkr  share of the frames the busiest worker answered (accounts are
               spread by rendezvous hash, unevenly for small N)
  CPU ms/frame CPU time of balancer + workers per frame answered
  other CPU%   CPU that processes outside the benchmark used meanwhile
  probe ms     a fixed pure-Python loop timed before/after the level: on a VM
               whose host is busy it rises although nothing here shows load
  CPU%, RSS    per process (balancer, each gunicorn master and child, this client);
               CPU% is of one core, so 200% is both cores of a 2-core machine
A level held when p99 e2e <= --p99-bound-ms, frames/s >= 98% of N*10, no stream
has more than --late-tolerance of its frames late, and nothing failed.

Results: a table on the terminal, --json-out and --plot (PNG of latency vs N),
by default in bench-results/ (gitignored).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import psutil
import soundfile as sf

from cluster import REPO, SPEAKERS, SPEECH, System, make_system

FRAME_SECONDS = 0.1
FRAMES_PER_SECOND = round(1 / FRAME_SECONDS)
RATE_TOLERANCE = 0.98  # sustained frames/s must reach this share of N*10
TAIL_SECONDS = 0.5  # frames keep flowing past the window so its end is steady state
CONNECT_CONCURRENCY = 32
RESULTS_DIR = REPO / "bench-results"
FALLBACK_SPEECH = REPO / "data"


class BenchError(Exception):
    """The benchmark cannot run as asked; the message says why."""


# ---------------------------------------------------------------- audio


@dataclass(frozen=True)
class StreamSource:
    """One recording cut into ready-to-send WAV frames (bytes built once)."""
    name: str
    sample_rate: int
    frames: tuple[bytes, ...]


def encode_frame(samples: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def split_frames(samples: np.ndarray, sample_rate: int, frame_seconds: float = FRAME_SECONDS) -> list[bytes]:
    """Whole frames of frame_seconds as WAV bytes; a short tail is dropped so
    every frame is the same length, as a live source sends them."""
    n = round(sample_rate * frame_seconds)
    if n <= 0:
        raise BenchError(f"frame of {frame_seconds:g} s at {sample_rate} Hz holds no samples")
    return [encode_frame(samples[i:i + n], sample_rate) for i in range(0, len(samples) - n + 1, n)]


def read_mono_int16(path: Path) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(str(path), dtype="int16", always_2d=True)
    return samples[:, 0].copy(), rate


def speech_files(speech_dir: Path, fallback: Path = FALLBACK_SPEECH) -> list[Path]:
    for directory in (speech_dir, fallback):
        files = sorted(directory.glob("*.wav")) if directory.is_dir() else []
        if files:
            return files
    raise BenchError(f"no speech WAVs in {speech_dir} or {fallback}")


def load_speech_sources(files: Sequence[Path]) -> list[StreamSource]:
    sources = []
    for path in files:
        samples, rate = read_mono_int16(path)
        frames = split_frames(samples, rate)
        if frames:
            sources.append(StreamSource(path.name, rate, tuple(frames)))
    if not sources:
        raise BenchError(f"none of {', '.join(p.name for p in files)} holds a whole 100 ms frame")
    return sources


@dataclass(frozen=True)
class Speaker:
    name: str
    enroll_wav: bytes  # the first recordings, at least enroll_seconds long
    held_out: np.ndarray  # the rest, streamed; never part of the enrollment
    sample_rate: int


def load_speakers(speakers_dir: Path, enroll_seconds: float) -> list[Speaker]:
    if not speakers_dir.is_dir():
        raise BenchError(f"speaker mode needs recordings per speaker in {speakers_dir} (absent)")
    speakers = []
    for directory in sorted(d for d in speakers_dir.iterdir() if d.is_dir()):
        files = sorted(directory.glob("*.wav"))
        if len(files) < 2:
            continue
        parts = [read_mono_int16(f) for f in files]
        rates = {rate for _, rate in parts}
        if len(rates) != 1:
            continue
        rate = rates.pop()
        enroll, held = [], []
        for samples, _ in parts:
            (held if sum(map(len, enroll)) >= enroll_seconds * rate else enroll).append(samples)
        if held and sum(map(len, enroll)) >= enroll_seconds * rate:
            speakers.append(Speaker(directory.name, encode_frame(np.concatenate(enroll), rate),
                                    np.concatenate(held), rate))
    if len(speakers) < 2:
        raise BenchError(f"speaker mode needs at least 2 speakers with >= {enroll_seconds:g} s to enroll "
                         f"and more to stream in {speakers_dir}")
    return speakers


def account_speakers(index: int, speakers: Sequence[Speaker]) -> tuple[Speaker, Speaker]:
    return speakers[index % len(speakers)], speakers[(index + 1) % len(speakers)]


def speaker_source(pair: tuple[Speaker, Speaker]) -> StreamSource:
    """The stream of an account: its two enrolled speakers' held-out speech in turn."""
    a, b = pair
    return StreamSource(f"{a.name}+{b.name}", a.sample_rate,
                        tuple(split_frames(np.concatenate((a.held_out, b.held_out)), a.sample_rate)))


# ---------------------------------------------------------------- statistics


def percentiles(values: Sequence[float] | np.ndarray, qs: Sequence[float] = (50, 95, 99)) -> dict[str, float | None]:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {f"p{q:g}": None for q in qs}
    return {f"p{q:g}": round(float(v), 2) for q, v in zip(qs, np.percentile(arr, qs))}


@dataclass
class StreamRecord:
    """One stream's timeline; index k is its k-th frame (seq k + 1)."""
    account: str
    offset: float
    due: np.ndarray
    sent: np.ndarray
    replied: np.ndarray
    model_ms: np.ndarray
    failed: np.ndarray  # the reply carried an error
    workers: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # connection-level and first error replies

    @classmethod
    def planned(cls, account: str, t0: float, offset: float, n_frames: int) -> "StreamRecord":
        nan = np.full(n_frames, np.nan)
        return cls(account, offset, t0 + offset + np.arange(n_frames) * FRAME_SECONDS,
                   nan.copy(), nan.copy(), nan.copy(), np.zeros(n_frames, bool))


@dataclass
class LevelStats:
    frames: int  # frames due in the window
    replied: int  # replies that arrived in the window (for frames/s)
    e2e: np.ndarray
    model: np.ndarray
    send_lag: np.ndarray
    error_replies: int
    lost: int
    late: int
    behind_streams: int


def window_stats(records: Sequence[StreamRecord], w0: float, w1: float, late_tolerance: float) -> LevelStats:
    """Frames due in [w0, w1): their latencies, errors and lateness."""
    e2e, model, lag = [], [], []
    frames = replied = errors = lost = late = behind = 0
    for r in records:
        in_window = (r.due >= w0) & (r.due < w1)
        replied += int(np.count_nonzero((r.replied >= w0) & (r.replied < w1)))
        count = int(np.count_nonzero(in_window))
        if count == 0:
            continue
        frames += count
        answered = in_window & ~np.isnan(r.replied)
        ok = answered & ~r.failed
        e2e.append((r.replied[answered] - r.sent[answered]) * 1000)
        model.append(r.model_ms[ok])
        lag.append((r.sent[in_window] - r.due[in_window]) * 1000)
        errors += int(np.count_nonzero(answered & r.failed))
        lost += count - int(np.count_nonzero(answered))
        # Late: the reply missed the next frame's due time, or never came.
        stream_late = int(np.count_nonzero(in_window & ~(r.replied <= r.due + FRAME_SECONDS)))
        late += stream_late
        behind += stream_late > late_tolerance * count
    cat = lambda parts: np.concatenate(parts) if parts else np.empty(0)  # noqa: E731
    return LevelStats(frames, replied, cat(e2e), cat(model), cat(lag), errors, lost, late, behind)


@dataclass
class Criteria:
    p99_bound_ms: float = 100.0
    late_tolerance: float = 0.01  # share of a stream's frames allowed to be late


def judge(n: int, fps: float, e2e_p99: float | None, error_replies: int, lost: int,
          connect_failures: int, behind_streams: int, criteria: Criteria) -> list[str]:
    """Why a level did not hold; empty when it held."""
    reasons = []
    if connect_failures:
        reasons.append(f"{connect_failures} streams could not connect")
    if e2e_p99 is None:
        reasons.append("no replies")
    elif e2e_p99 > criteria.p99_bound_ms:
        reasons.append(f"p99 {e2e_p99:.1f} ms > {criteria.p99_bound_ms:g} ms")
    if fps < RATE_TOLERANCE * n * FRAMES_PER_SECOND:
        reasons.append(f"{fps:.0f} frames/s < {RATE_TOLERANCE:.0%} of {n * FRAMES_PER_SECOND}")
    if behind_streams:
        reasons.append(f"{behind_streams} streams behind real time (> {criteria.late_tolerance:.1%} frames late)")
    if error_replies or lost:
        reasons.append(f"{error_replies} error replies, {lost} frames unanswered")
    return reasons


# ---------------------------------------------------------------- processes


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


class ProcessWatch:
    """CPU over the measuring window and peak RSS of the benchmarked processes."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.watched = [Watched(name, p) for name, p in processes.items()]
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
        self.sample()

    def sample(self) -> None:
        for w in self.watched:
            if not w.gone:
                try:
                    w.rss_peak = max(w.rss_peak, w.process.memory_info().rss)
                except psutil.Error:
                    w.gone = True

    def end(self) -> tuple[dict[str, dict], float]:
        self.sample()
        wall = max(time.monotonic() - self.started, 1e-9)
        out = {}
        for w in self.watched:
            entry: dict = {"pid": w.process.pid}
            try:
                user, system = (end - start for end, start in zip(_cpu_seconds(w.process), w.cpu_start))
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
        return out, machine_usage(self.machine_start, psutil.cpu_times(), wall)

    @staticmethod
    def other_cpu_pct(processes: dict[str, dict], machine: dict) -> float:
        """CPU (of one core) that processes outside the benchmark used: other
        load on the machine skews every figure, so it is reported."""
        ours = sum(p.get("cpu_pct", 0.0) for p in processes.values())
        return round(max(machine["process_cpu_pct"] - ours, 0.0), 1)


def machine_usage(start, end, wall: float) -> dict:
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
    procs = {"balancer": psutil.Process(system.balancer.popen.pid)}
    for port, worker in zip(system.worker_ports, system.workers):
        tree = process_tree(f"w{port}", worker.popen.pid)
        if len(tree) < 2:
            raise BenchError(f"worker on port {port} has no serving process (see its output in {system.root})")
        procs.update(tree)
    return procs


def process_tree(name: str, pid: int) -> dict[str, psutil.Process]:
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
    for i, part in enumerate(p.strip() for p in text.split(",") if p.strip()):
        name, sep, pid = part.rpartition("=")
        if not pid.isdigit():
            raise BenchError(f"--pids wants NAME=PID or PID items, got {part!r}")
        try:
            procs.update(process_tree(name if sep else f"pid{pid}", int(pid)))
        except psutil.NoSuchProcess:
            raise BenchError(f"--pids: no process {pid}") from None
    return procs


# ---------------------------------------------------------------- load


@dataclass(frozen=True)
class Target:
    http_url: str
    ws_url: str
    token: str = ""

    @classmethod
    def from_url(cls, url: str, token: str = "") -> "Target":
        """http://host:port or ws://host:port[/ws] -> both forms."""
        url = url.rstrip("/")
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("http", "https", "ws", "wss"):
            raise BenchError(f"--url must start with http://, https://, ws:// or wss://, got {url!r}")
        host = rest.split("/", 1)[0]
        secure = scheme in ("https", "wss")
        return cls(f"{'https' if secure else 'http'}://{host}", f"{'wss' if secure else 'ws'}://{host}/ws", token)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def account_code(index: int) -> str:
    return f"bench{index:04d}"


async def _send_frames(ws: aiohttp.ClientWebSocketResponse, header: str, source: StreamSource,
                       start: int, rec: StreamRecord) -> None:
    frames, count = source.frames, len(source.frames)
    for k, due in enumerate(rec.due.tolist()):
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        rec.sent[k] = time.monotonic()
        await ws.send_str(header)
        await ws.send_bytes(frames[(start + k) % count])


async def _receive_replies(ws: aiohttp.ClientWebSocketResponse, rec: StreamRecord) -> None:
    expected, received = len(rec.due), 0
    while received < expected:
        msg = await ws.receive()
        now = time.monotonic()
        if msg.type != aiohttp.WSMsgType.TEXT:
            rec.errors.append(f"connection ended after {received} of {expected} replies ({msg.type.name})")
            return
        reply = json.loads(msg.data)
        seq = reply.get("seq")
        if not isinstance(seq, int) or not 1 <= seq <= expected or not math.isnan(rec.replied[seq - 1]):
            if len(rec.errors) < 3:
                rec.errors.append(f"reply with an unknown or repeated seq: {msg.data[:120]}")
            continue
        k = seq - 1
        rec.replied[k] = now
        received += 1
        if "error" in reply:
            rec.failed[k] = True
            if len(rec.errors) < 3:
                rec.errors.append(str(reply["error"])[:200])
        else:
            ms = reply.get("ms")
            rec.model_ms[k] = ms if isinstance(ms, (int, float)) else math.nan
            rec.workers[reply.get("worker")] += 1


@dataclass
class LevelPlan:
    n: int
    seconds: float
    warmup: float
    drain_timeout: float = 5.0
    seed: int = 0


async def _connect_all(session: aiohttp.ClientSession, target: Target, n: int) -> list:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect() -> aiohttp.ClientWebSocketResponse:
        async with gate:
            return await session.ws_connect(target.ws_url, headers=target.headers(), autoping=True)
    return await asyncio.gather(*(connect() for _ in range(n)), return_exceptions=True)


async def run_level(plan: LevelPlan, target: Target, sources: Sequence[StreamSource],
                    watch: ProcessWatch | None, criteria: Criteria) -> dict:
    rng = random.Random(plan.seed * 100_003 + plan.n)
    n_frames = math.ceil((plan.warmup + plan.seconds + TAIL_SECONDS) / FRAME_SECONDS)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets = await _connect_all(session, target, plan.n)
        connect_errors = [s for s in sockets if isinstance(s, BaseException)]
        t0 = time.monotonic() + 0.2
        w0, w1 = t0 + plan.warmup, t0 + plan.warmup + plan.seconds
        records, senders, receivers = [], [], []
        for i, ws in enumerate(sockets):
            if isinstance(ws, BaseException):
                continue
            source = sources[i % len(sources)]
            rec = StreamRecord.planned(account_code(i), t0, rng.uniform(0, FRAME_SECONDS), n_frames)
            records.append(rec)
            header = f"ACCOUNTCODE={rec.account}"
            senders.append(asyncio.create_task(_send_frames(ws, header, source, rng.randrange(len(source.frames)), rec)))
            receivers.append(asyncio.create_task(_receive_replies(ws, rec)))

        async def measure() -> tuple[dict, float] | None:
            if watch is None:
                return None
            await asyncio.sleep(max(w0 - time.monotonic(), 0))
            watch.begin()
            while (left := w1 - time.monotonic()) > 0:
                await asyncio.sleep(min(0.5, left))
                watch.sample()
            return watch.end()
        measuring = asyncio.create_task(measure())

        send_results = await asyncio.gather(*senders, return_exceptions=True)
        for rec, result in zip(records, send_results):
            if isinstance(result, BaseException):
                rec.errors.append(f"send failed: {result.__class__.__name__}: {result}")
        if receivers:
            _, pending = await asyncio.wait(receivers, timeout=plan.drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*receivers, return_exceptions=True)
        processes = await measuring
        await asyncio.gather(*(ws.close() for ws in sockets if not isinstance(ws, BaseException)),
                             return_exceptions=True)
    return summarize(plan, records, connect_errors, w0, w1, processes, criteria)


def system_cpu_ms_per_frame(processes: dict[str, dict], fps: float) -> float | None:
    """CPU the served system (everything measured but this client) spent per
    frame answered: the cost that decides how many streams fit on a machine."""
    served = sum(p.get("cpu_pct", 0.0) for name, p in processes.items() if name != "client")
    return round(served / 100 / fps * 1000, 3) if fps > 0 and served > 0 else None


def summarize(plan: LevelPlan, records: Sequence[StreamRecord], connect_errors: Sequence[BaseException],
              w0: float, w1: float, processes: tuple[dict, float] | None, criteria: Criteria) -> dict:
    stats = window_stats(records, w0, w1, criteria.late_tolerance)
    fps = stats.replied / plan.seconds
    e2e = percentiles(stats.e2e)
    e2e["max"] = round(float(stats.e2e.max()), 2) if stats.e2e.size else None
    model = percentiles(stats.model, (50, 99))
    lag = percentiles(stats.send_lag, (50, 99))
    workers: Counter = Counter()
    messages: Counter = Counter()
    for r in records:
        workers.update(r.workers)
        messages.update(r.errors)
    messages.update(f"connect failed: {e.__class__.__name__}: {e}"[:200] for e in connect_errors)
    reasons = judge(plan.n, fps, e2e["p99"], stats.error_replies, stats.lost,
                    len(connect_errors), stats.behind_streams, criteria)
    return {
        "n": plan.n, "seconds": plan.seconds, "warmup": plan.warmup,
        "frames": stats.frames, "frames_per_s": round(fps, 1), "target_frames_per_s": plan.n * FRAMES_PER_SECOND,
        "e2e_ms": e2e, "model_ms": model, "client_send_lag_ms": lag,
        "error_replies": stats.error_replies, "lost": stats.lost, "late": stats.late,
        "behind_streams": stats.behind_streams, "connect_failures": len(connect_errors),
        "errors": stats.error_replies + stats.lost + len(connect_errors),
        "error_messages": dict(messages.most_common(5)),
        "frames_per_worker": {str(k): v for k, v in sorted(workers.items(), key=lambda kv: str(kv[0]))},
        "busiest_worker_share": round(max(workers.values()) / sum(workers.values()), 3) if workers else None,
        "processes": processes[0] if processes else {},
        "machine_cpu_pct": processes[1]["busy_pct"] if processes else None,
        "machine": processes[1] if processes else None,
        "other_cpu_pct": ProcessWatch.other_cpu_pct(*processes) if processes else None,
        "system_cpu_ms_per_frame": system_cpu_ms_per_frame(processes[0], fps) if processes else None,
        "held": not reasons, "reasons": reasons,
    }


# ---------------------------------------------------------------- speaker enrollment


async def enroll_accounts(target: Target, indices: Sequence[int], speakers: Sequence[Speaker],
                          ready_timeout: float = 180.0) -> None:
    """Two speakers per account through the REST API, before any streaming."""
    gate = asyncio.Semaphore(4)
    async with aiohttp.ClientSession(headers=target.headers()) as session:
        async def enroll(index: int, speaker: Speaker) -> None:
            url = f"{target.http_url}/accounts/{account_code(index)}/speakers/{speaker.name}"
            deadline = time.monotonic() + ready_timeout
            while True:
                async with gate, session.post(url, data=speaker.enroll_wav,
                                              headers={"Content-Type": "audio/wav"}) as resp:
                    status, body = resp.status, await resp.text()
                # 503: the worker is up but its encoder is still loading.
                if status != 503 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            if status == 404:
                raise BenchError(
                    f"enrollment POST {url} answered 404 ({body.strip()[:200]}): this build has no speaker "
                    "REST API (worker/speakers is not in place yet); run --mode vad until it is")
            if status >= 300:
                raise BenchError(f"enrollment POST {url} answered {status}: {body.strip()[:300]}")
        await asyncio.gather(*(enroll(i, s) for i in indices for s in account_speakers(i, speakers)))


# ---------------------------------------------------------------- search


def next_n(n: int, factor: float, add: int) -> int:
    """The next level: n + add when add is set, else n * factor (at least n + 1)."""
    if add > 0:
        return n + add
    return max(n + 1, round(n * factor))


def find_max(run: Callable[[int], dict], start: int, factor: float, add: int, max_n: int,
             refine: int) -> tuple[int | None, list[dict]]:
    """Raise N until a level fails, then bisect `refine` times between the last
    level that held and the first that did not. Returns (largest N held, levels)."""
    levels: list[dict] = []
    held: int | None = None
    failed: int | None = None
    n = start
    while n <= max_n:
        level = run(n)
        levels.append(level)
        if not level["held"]:
            failed = n
            break
        held = n
        n = next_n(n, factor, add)
    lo = held if held is not None else 0
    for _ in range(refine):
        if failed is None or failed - lo <= 1:
            break
        mid = (lo + failed) // 2
        level = run(mid)
        levels.append(level)
        if level["held"]:
            lo = held = mid
        else:
            failed = mid
    return held, levels


# ---------------------------------------------------------------- output


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(levels: Sequence[dict]) -> str:
    head = ("N", "frames/s", "target", "e2e p50", "p95", "p99", "max", "model p50", "p99",
            "send lag p99", "errors", "lost", "late", "behind", "busiest worker", "CPU ms/frame", "machine CPU%",
            "other CPU%",
            "probe ms", "held")
    rows = [head]
    for lv in sorted(levels, key=lambda lv: lv["n"]):
        e, m = lv["e2e_ms"], lv["model_ms"]
        rows.append((str(lv["n"]), _fmt(lv["frames_per_s"]), str(lv["target_frames_per_s"]),
                     _fmt(e["p50"]), _fmt(e["p95"]), _fmt(e["p99"]), _fmt(e["max"]), _fmt(m["p50"], 2), _fmt(m["p99"], 2),
                     _fmt(lv["client_send_lag_ms"]["p99"]), str(lv["errors"]), str(lv["lost"]), str(lv["late"]),
                     str(lv["behind_streams"]),
                     f"{lv['busiest_worker_share']:.0%}" if lv.get("busiest_worker_share") else "-",
                     _fmt(lv["system_cpu_ms_per_frame"], 2), _fmt(lv["machine_cpu_pct"]), _fmt(lv["other_cpu_pct"], 0),
                     "/".join(f"{v:.1f}" for v in lv.get("cpu_probe_ms", [])) or "-", "yes" if lv["held"] else "NO"))
    table = _align(rows)
    process_rows = format_process_table(levels)
    return table + ("\n\nCPU% of one core / peak RSS MB (during the level; VmHWM in brackets)\n" + process_rows
                    if process_rows else "")


def format_process_table(levels: Sequence[dict]) -> str:
    names: list[str] = []
    for lv in levels:
        names += [name for name in lv["processes"] if name not in names]
    if not names:
        return ""
    rows = [("N", *names)]
    for lv in sorted(levels, key=lambda lv: lv["n"]):
        cells = []
        for name in names:
            p = lv["processes"].get(name)
            if p is None:
                cells.append("-")
                continue
            cell = f"{_fmt(p.get('cpu_pct'), 0)}% {p['rss_peak_mb']:.0f}"
            if "hwm_mb" in p:
                cell += f" [{p['hwm_mb']:.0f}]"
            cells.append(cell + (" gone" if p.get("gone") else ""))
        rows.append((str(lv["n"]), *cells))
    return _align(rows)


def _align(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def write_plot(levels: Sequence[dict], path: Path, title: str, bound_ms: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(levels, key=lambda lv: lv["n"])
    ns = [lv["n"] for lv in ordered]
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, label, style in (("p50", "e2e p50", "o-"), ("p95", "e2e p95", "s--"), ("p99", "e2e p99", "^-")):
        ax.plot(ns, [lv["e2e_ms"][key] if lv["e2e_ms"][key] is not None else np.nan for lv in ordered],
                style, label=label)
    ax.plot(ns, [lv["model_ms"]["p50"] if lv["model_ms"]["p50"] is not None else np.nan for lv in ordered],
            "x:", label="model p50")
    ax.axhline(bound_ms, color="red", linewidth=0.8, linestyle="--", label=f"p99 bound {bound_ms:g} ms")
    failed = [lv for lv in ordered if not lv["held"]]
    if failed:
        ax.scatter([lv["n"] for lv in failed],
                   [lv["e2e_ms"]["p99"] if lv["e2e_ms"]["p99"] is not None else bound_ms for lv in failed],
                   s=120, facecolors="none", edgecolors="red", label="did not hold")
    ax.set_xlabel("concurrent real-time streams (N)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- configuration


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
    json_out: Path | None = None
    plot: Path | None = None
    keep: bool = False
    seed: int = 0
    nice: int = 0
    quiet_below: float = 25.0
    quiet_timeout: float = 120.0
    probe_below: float = 0.0  # 0: do not wait for the CPU probe
    noisy_retries: int = 1


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> BenchConfig:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="scripts/bench.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
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
    p.add_argument("--p99-bound-ms", type=float, default=100.0, help="a level holds while p99 e2e <= this (default: 100)")
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
    p.add_argument("--json-out", type=Path, help="results JSON (default: bench-results/bench-<mode>.json)")
    p.add_argument("--plot", type=Path, help="latency-vs-N PNG (default: bench-results/bench-<mode>.png)")
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
    a = p.parse_args(argv)
    if a.seconds is not None and a.seconds <= 0:
        p.error("--seconds must be positive")
    if a.step_factor <= 1 and a.step_add <= 0:
        p.error("--step-factor must be > 1 (or give --step-add)")
    if a.pids and not a.url:
        p.error("--pids goes with --url; a started system is measured anyway")
    if a.nice and a.url:
        p.error("--nice applies only to a system the benchmark starts, not to --url")
    seconds = a.seconds if a.seconds is not None else (10.0 if a.find_max else 20.0)
    suffix = a.mode + ("-findmax" if a.find_max else "")
    return BenchConfig(
        mode=a.mode, streams=a.streams, seconds=seconds, warmup=a.warmup, find_max=a.find_max, start=a.start,
        step_factor=a.step_factor, step_add=a.step_add, max_streams=a.max_streams, refine=a.refine,
        criteria=Criteria(a.p99_bound_ms, a.late_tolerance), url=a.url, token=a.token, pids=a.pids,
        n_workers=len(a.worker_ports) or a.n_workers, worker_ports=a.worker_ports,
        worker_args=tuple(a.worker_arg), balancer_args=tuple(a.balancer_arg),
        speech_dir=a.speech_dir, speakers_dir=a.speakers_dir, enroll_seconds=a.enroll_seconds,
        json_out=a.json_out or RESULTS_DIR / f"bench-{suffix}.json", plot=a.plot or RESULTS_DIR / f"bench-{suffix}.png",
        keep=a.keep, seed=a.seed, nice=a.nice, quiet_below=a.quiet_below, quiet_timeout=a.quiet_timeout,
        probe_below=a.probe_below,
        noisy_retries=a.noisy_retries)


# ---------------------------------------------------------------- main


def worker_args_for(config: BenchConfig, root: Path) -> list[str]:
    if config.mode == "vad":
        mode_args = ["--encoder", "none"]
    else:
        mode_args = ["--encoder", "ge2e", "--store", str(root / "voiceprints.db"),
                     "--activity-log", str(root / "logs" / "activity.log")]
    return [*mode_args, *config.worker_args]


class Bench:
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
            time.sleep(1.0)
            other = ProcessWatch.other_cpu_pct(*self.watch.end())
            probe = cpu_probe_ms() if c.probe_below else 0.0
            if other <= c.quiet_below and probe <= c.probe_below:
                return
            state = f"{other:.0f}% of a core outside the benchmark" + (f", CPU probe {probe:.1f} ms" if c.probe_below else "")
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
        e = level["e2e_ms"]
        print(f"  {level['frames_per_s']:.0f} frames/s (target {level['target_frames_per_s']}), "
              f"e2e p50/p95/p99 {_fmt(e['p50'])}/{_fmt(e['p95'])}/{_fmt(e['p99'])} ms, "
              f"model p50 {_fmt(level['model_ms']['p50'], 2)} ms, errors {level['errors']}, late {level['late']}, "
              f"CPU probe {level['cpu_probe_ms'][0]:.1f}/{level['cpu_probe_ms'][1]:.1f} ms"
              f" -> {'held' if level['held'] else 'did not hold: ' + '; '.join(level['reasons'])}", flush=True)
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


def describe_sources(bench: Bench) -> list[str]:
    if bench.config.mode == "vad":
        return [f"{s.name} ({s.sample_rate} Hz, {len(s.frames) / FRAMES_PER_SECOND:.1f} s)" for s in bench.speech_sources]
    return [f"{s.name} (enroll {len(s.enroll_wav) // 2 / s.sample_rate:.1f} s, stream {len(s.held_out) / s.sample_rate:.1f} s)"
            for s in bench.speakers]


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


def renice(processes, nice: int) -> list[str]:
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


def run_bench(config: BenchConfig) -> dict:
    system: System | None = None
    root: Path | None = None
    audio = load_audio(config)
    try:
        if config.url:
            target = Target.from_url(config.url, config.token)
            processes = parse_pids(config.pids) if config.pids else {}
        else:
            root = Path(tempfile.mkdtemp(prefix="bench-"))
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
            print(f"starting {config.n_workers} workers ({config.mode}) and the balancer in {root} ...", flush=True)
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
        print("streaming: " + ", ".join(describe_sources(bench)), flush=True)
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
            "find_max": config.find_max, "max_n_held": held, "sources": describe_sources(bench),
            "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
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


def _exit_on_signal(signum, frame) -> None:
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
    config.json_out.parent.mkdir(parents=True, exist_ok=True)
    config.json_out.write_text(json.dumps(result, indent=2) + "\n")
    write_plot(levels, config.plot, title, config.criteria.p99_bound_ms)
    print(f"\nwrote {config.json_out} and {config.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
