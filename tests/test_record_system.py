"""Never "ok" without a record, with real processes: a worker whose
--log-dir is a real tmpfs that fills up while real frames stream through a
real balancer, --min-free-mb stopping it before the disk is full (and its
recovery), and one account's unwritable log among six accounts' streams."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import soundfile as sf

from balancer.routing import pick_worker
from frame_logs import logged
from test_record import whole_lines
from tmpfs import fill, free_bytes, tmpfs
from voicestream.batch import CONTENT_TYPE, PATH, FrameMeta, encode_batch
from voicestream.wav import split_frames
from voicetools.cluster import Process, System, free_port, http_ok, wait_until
from voicetools.paths import REPO

pytestmark = pytest.mark.integration

STARTUP_SECONDS = 120


def speech_frames(seconds: float) -> list[bytes]:
    """100 ms WAV frames of a committed recording (16 kHz speech)."""
    samples, rate = sf.read(REPO / "data" / "us_female_16k.wav", dtype="int16")
    frames = split_frames(samples, rate)
    return (frames * (1 + int(seconds * 10) // len(frames)))[:int(seconds * 10)]


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def post_batch(worker_url: str, frames: list[tuple[FrameMeta, bytes]]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(worker_url + PATH, data=encode_batch(frames),
                                     headers={"Content-Type": CONTENT_TYPE})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


async def stream(url: str, account: str, frames: list[bytes]) -> list[dict[str, Any]]:
    """The account's frames on one WebSocket, each sent after the last reply."""
    replies = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for frame in frames:
            await ws.send_str(f"ACCOUNTCODE={account}")
            await ws.send_bytes(frame)
            replies.append(await ws.receive_json(timeout=30))
    return replies


def stream_all(url: str, accounts: list[str], frames: list[bytes]) -> dict[str, list[dict[str, Any]]]:
    async def together() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(stream(url, account, frames) for account in accounts))
    return dict(zip(accounts, asyncio.run(together()), strict=True))


@contextmanager
def cluster(root: Path, log_dirs: list[Path], worker_args: list[str]) -> Iterator[System]:
    """Workers as real processes, each with its own --log-dir (a host of its
    own, as far as the record goes), and a balancer in front of them."""
    system = System(root, [free_port() for _ in log_dirs], free_port())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    system.workers = [Process(f"worker-{port}", [sys.executable, "-m", "worker", "--port", str(port), "--log-dir",
                                                 str(log_dir), "--encoder", "none", *worker_args],
                              root / f"worker-{port}.out", env)
                      for port, log_dir in zip(system.worker_ports, log_dirs, strict=True)]
    urls = ",".join(system.worker_url(i) for i in range(len(log_dirs)))
    system.balancer = Process("balancer", [sys.executable, "-m", "balancer", "--host", "127.0.0.1", "--port",
                                           str(system.balancer_port), "--workers", urls, "--health-interval", "0.2"],
                              root / "balancer.out", env)
    try:
        for process in [*system.workers, system.balancer]:
            process.start()
        for i in range(len(log_dirs)):
            system.wait_worker(i, STARTUP_SECONDS)
        system.wait_balancer_sees_all()
        yield system
    finally:
        system.stop()


def accounts_of(system: System, worker: int, count: int, prefix: str) -> list[str]:
    """count account codes whose first choice is the worker."""
    urls = [system.worker_url(i) for i in range(len(system.worker_ports))]
    codes = (f"{prefix}{n}" for n in range(10_000))
    return [code for code in codes if pick_worker(code, urls) == urls[worker]][:count]


def line_times(log_dirs: list[Path], account: str) -> Counter[str]:
    """How often each frame time is logged for the account, over every log directory."""
    return Counter(logged(line).time for log_dir in log_dirs for line in whole_lines(log_dir / f"{account}.txt"))


def test_a_full_log_disk_answers_no_frame_ok_without_its_line_and_its_accounts_move(tmp_path: Path):
    """Worker A logs to a 64 KB tmpfs that fills while ten accounts stream;
    worker B has room. Every frame is answered ok with exactly one whole
    line - A's accounts' lines continue in B's log once A is full - and A
    says why it is out: 503 for frames and /health, naming the cause."""
    frames = speech_frames(seconds=6)
    with tmpfs(tmp_path / "disk", "64k") as disk:
        # About four 4 KiB pages left (tmpfs gives each file whole pages): a few of A's eight
        # accounts' files take them, then every write fails; A's accounts send 480 frames.
        fill(disk, leave=16 * 1024)
        roomy = tmp_path / "roomy"
        with cluster(tmp_path, [disk, roomy], ["--min-free-mb", "0"]) as system:
            a_port, b_port = system.worker_ports
            accounts = accounts_of(system, 0, 8, "ONA") + accounts_of(system, 1, 2, "ONB")
            replies = stream_all(system.ws_url, accounts, frames)
            health = get(system.worker_url(0) + "/health")
            direct = post_batch(system.worker_url(0), [(FrameMeta("ONA0", "direct", 1, None), frames[0])])
            metrics = urllib.request.urlopen(system.worker_url(0) + "/metrics").read().decode()
        for account in accounts:
            assert all("error" not in r for r in replies[account]), [r for r in replies[account] if "error" in r][:3]
            # Each answered frame's time is logged exactly once, on A or on B, and nothing else is.
            assert line_times([disk, roomy], account) == Counter(r["time"] for r in replies[account]), account
        served_by = Counter(r["worker"] for account in accounts[:8] for r in replies[account])
        assert served_by[a_port] > 0 and served_by[b_port] > 0, served_by  # A filled up; B took its accounts
        assert free_bytes(disk) < 4096
    assert health == (503, {**health[1], "status": "degraded", "reason": "disk_full",
                            "error": "--log-dir cannot be written: no space left on device"})
    assert direct == (503, {"error": "this worker cannot record frames now: --log-dir cannot be written: no space "
                                     "left on device: send the frames to another worker"})
    assert 'voicestream_worker_frames_unrecorded_total{reason="disk_full"}' in metrics
    assert "voicestream_worker_degraded 1.0" in metrics


def test_min_free_mb_stops_logging_before_the_disk_is_full_and_recovers(tmp_path: Path):
    """--min-free-mb 1 on a tmpfs with 1 MB and 40 KB free: the worker stops
    when about 40 KB of lines are written (a second's lines at most past the
    mark), so the disk never fills: no write fails; frames are answered ok
    only with their line, the others with an error; once space is back, it
    takes frames again."""
    frames = speech_frames(seconds=15)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        filler = fill(disk, leave=1_000_000 + 40 * 1024)
        with cluster(tmp_path, [disk], ["--min-free-mb", "1"]) as system:
            accounts = [f"MF{n}" for n in range(10)]
            replies = stream_all(system.ws_url, accounts, frames)
            health = get(system.worker_url(0) + "/health")
            left = free_bytes(disk)
            for account in accounts:
                assert line_times([disk], account) == Counter(r["time"] for r in replies[account] if "error" not in r)
            refused = [r for account in accounts for r in replies[account] if "error" in r]
            assert refused and all(r["error"].startswith("no worker available") and "time" not in r
                                   for r in refused), refused[:3]
            filler.unlink()
            wait_until(lambda: http_ok(system.worker_url(0) + "/health"), 10, "the worker to recover")
            system.wait_balancer_sees_all()
            again = stream_all(system.ws_url, ["MFAGAIN"], frames[:20])["MFAGAIN"]
            output = system.workers[0].output()
        assert all("error" not in r for r in again)
        assert line_times([disk], "MFAGAIN") == Counter(r["time"] for r in again)
    assert left > 900_000  # stopped by the margin, far from full
    assert "no space left on device" not in output  # no write ever failed
    assert health[0] == 503 and (health[1]["status"], health[1]["reason"]) == ("degraded", "disk_full")
    assert health[1]["error"].endswith("free where the frame logs are, under --min-free-mb 1")


def test_one_accounts_unwritable_log_through_a_real_balancer_fails_no_other_account(vad_system):
    """Six accounts stream to one worker; X5's log path is a directory. The
    five others are answered ok and logged, X5's frames get the error, and
    the worker stays in the ring."""
    system = vad_system(n_workers=1)
    (system.log_dir / "X5.txt").mkdir()
    accounts = ["X1", "X2", "X3", "X4", "X5", "X6"]
    replies = stream_all(system.ws_url, accounts, speech_frames(seconds=2))
    for account in accounts:
        if account == "X5":
            assert {r.get("error") for r in replies[account]} == {"frame log X5.txt cannot be written: is a directory"}
        else:
            assert all("error" not in r for r in replies[account])
            assert line_times([system.log_dir], account) == Counter(r["time"] for r in replies[account])
    assert get(system.worker_url(0) + "/health")[0] == 200
    assert get(system.url + "/health")[1]["workers"] == {system.worker_url(0): "up"}
