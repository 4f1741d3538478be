"""One level's numbers: each stream's timeline, the statistics of the frames
due in the measuring window, and whether the level held."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from voicestream.wav import FRAME_SECONDS
from voicetools.percentile import percentiles

from .audio import FRAMES_PER_SECOND
from .processes import CLIENT, DATABASE_SERVER, Usage, other_cpu_pct

RATE_TOLERANCE = 0.98  # sustained frames/s must reach this share of N*10


@dataclass
class LevelPlan:
    """N streams for warmup + seconds, replies awaited drain_timeout after the last send."""
    n: int
    seconds: float
    warmup: float
    drain_timeout: float = 5.0
    seed: int = 0


@dataclass
class StreamRecord:
    """One stream's timeline; index k is its k-th frame (seq k + 1). Times are
    time.monotonic() seconds, NaN until they happen."""
    account: str
    offset: float
    due: np.ndarray
    sent: np.ndarray
    replied: np.ndarray
    model_ms: np.ndarray
    failed: np.ndarray  # the reply carried an error
    workers: Counter[object] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # connection-level and first error replies

    @classmethod
    def planned(cls, account: str, t0: float, offset: float, n_frames: int) -> StreamRecord:
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


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0)


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
    return LevelStats(frames, replied, _concat(e2e), _concat(model), _concat(lag), errors, lost, late, behind)


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


def system_cpu_ms_per_frame(processes: dict[str, dict], fps: float) -> float | None:
    """CPU the served system (balancer and workers: everything measured but
    this client and the database server) spent per frame answered: the cost
    that decides how many streams fit on a machine."""
    served = sum(p.get("cpu_pct", 0.0) for name, p in processes.items() if name not in (CLIENT, DATABASE_SERVER))
    return _ms_per_frame(served, fps)


def database_cpu_ms_per_frame(processes: dict[str, dict], fps: float) -> float | None:
    """CPU the database server's processes spent per frame answered (None: not measured)."""
    server = processes.get(DATABASE_SERVER)
    return _ms_per_frame(server.get("cpu_pct", 0.0), fps) if server is not None else None


def _ms_per_frame(cpu_pct: float, fps: float) -> float | None:
    return round(cpu_pct / 100 / fps * 1000, 3) if fps > 0 and cpu_pct > 0 else None


def answered_frames(records: Sequence[StreamRecord]) -> int:
    """Frames of the whole level (warm-up and tail too) answered without an
    error: with --database, each is exactly one row of the frames table."""
    return sum(int(np.count_nonzero(~np.isnan(r.replied) & ~r.failed)) for r in records)


def sent_frames(records: Sequence[StreamRecord]) -> int:
    """Frames of the whole level sent: a frame whose reply the benchmark
    stopped waiting for may still have been analysed and recorded."""
    return sum(int(np.count_nonzero(~np.isnan(r.sent))) for r in records)


def summarize(plan: LevelPlan, records: Sequence[StreamRecord], connect_errors: Sequence[BaseException],
              w0: float, w1: float, usage: Usage | None, criteria: Criteria) -> dict:
    """The level as reported (table, JSON): statistics, errors, usage, verdict."""
    stats = window_stats(records, w0, w1, criteria.late_tolerance)
    fps = stats.replied / plan.seconds
    e2e = percentiles(stats.e2e)
    e2e["max"] = round(float(stats.e2e.max()), 2) if stats.e2e.size else None
    model = percentiles(stats.model, (50, 99))
    lag = percentiles(stats.send_lag, (50, 99))
    workers: Counter[object] = Counter()
    messages: Counter[str] = Counter()
    for r in records:
        workers.update(r.workers)
        messages.update(r.errors)
    messages.update(f"connect failed: {e.__class__.__name__}: {e}"[:200] for e in connect_errors)
    reasons = judge(plan.n, fps, e2e["p99"], stats.error_replies, stats.lost,
                    len(connect_errors), stats.behind_streams, criteria)
    processes, machine = usage if usage else ({}, None)
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
        "processes": processes,
        "machine_cpu_pct": machine["busy_pct"] if machine else None,
        "machine": machine,
        "other_cpu_pct": other_cpu_pct(processes, machine) if machine else None,
        "system_cpu_ms_per_frame": system_cpu_ms_per_frame(processes, fps) if machine else None,
        "database_cpu_ms_per_frame": database_cpu_ms_per_frame(processes, fps) if machine else None,
        "answered": answered_frames(records), "sent": sent_frames(records),
        "held": not reasons, "reasons": reasons,
    }
