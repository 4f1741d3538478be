"""Resume after a reconnect, with real processes: two balancers in front of
the same two workers; voicestream-replay streams an account through balancer
A, and A is killed (kill -9) while a frame is at the account's worker. The
worker finishes that frame (its line is written, its reply goes nowhere);
replay reconnects to balancer B and sends the frame again, which the worker
answers as a duplicate: every frame answered, exactly one log line per frame
(and one row, with --database), and the account's VAD state went on."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import psycopg
import pytest

from frame_logs import logged
from voicestream.stamps import stamp_text
from voicestream.wav import FRAME_SECONDS
from voicetools.cluster import Process, System, free_port, make_system, wait_until
from voicetools.faults import frames_of, owner_index
from voicetools.paths import DATA
from voicetools.replay import AccountStats, Frame, ReplayOptions, Target, replay

pytest_plugins = ["pg"]
pytestmark = pytest.mark.integration

ACCOUNT = "resumed"
LOGGED_BEFORE_THE_KILL = 30  # frames


def start_replica(system: System) -> tuple[Process, str]:
    """A second balancer for the system's workers, with the first one's flags; its WebSocket URL."""
    port = free_port()
    workers = ",".join(system.worker_url(i) for i in range(len(system.worker_ports)))
    replica = Process("balancer-b", [sys.executable, "-m", "balancer", "--host", "127.0.0.1", "--port", str(port),
                                     "--workers", workers, "--health-interval", "0.2"],
                      system.root / "balancer-b.out", {**os.environ, "PYTHONUNBUFFERED": "1"})
    replica.start()
    return replica, f"ws://127.0.0.1:{port}/ws"


async def frames_in_flight(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as resp:
        return (await resp.json())["frames_in_flight"]


async def until(check, what: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def kill_balancer_with_a_frame_at_the_worker(system: System, replica_url: str) -> AccountStats:
    """Streams the account through A (B as the next URL); once 30 frames are
    logged, freezes its worker (SIGSTOP) until A has a frame there, kills A,
    thaws the worker. replay's stats."""
    wavs = frames_of(DATA / "us_female_16k.wav", seconds=10)
    target = Target(ACCOUNT, tuple(Frame(f"{i:05d}.wav", wav, FRAME_SECONDS) for i, wav in enumerate(wavs)))
    options = ReplayOptions(url=system.ws_url, more_urls=(replica_url,), interval_ms=0)
    worker = system.workers[owner_index(system, ACCOUNT)]
    balancer = system.balancer
    assert balancer is not None

    async def logged_enough() -> bool:
        return len(system.account_log(ACCOUNT)) >= LOGGED_BEFORE_THE_KILL

    async def go() -> AccountStats:
        streaming = asyncio.create_task(replay([target], options))
        await until(logged_enough, "the first frames to be logged")
        os.killpg(worker.pid, signal.SIGSTOP)
        try:
            # The stream's one frame in flight is at the frozen worker: seen
            # twice, so that A has long written the request.
            for _ in range(2):
                await until(lambda: _at_worker(system.url), "a frame at the frozen worker")
            balancer.kill()
        finally:
            os.killpg(worker.pid, signal.SIGCONT)
        [stats] = await streaming
        return stats
    return asyncio.run(go())


async def _at_worker(url: str) -> bool:
    return await frames_in_flight(url) == 1


def check_one_line_per_frame(system: System, stats: AccountStats) -> None:
    frames = stats.frames_expected
    assert stats.error_messages == [] and stats.errors == 0
    assert (stats.frames_sent, stats.replies, stats.missing) == (frames, frames, 0)
    assert (stats.reconnects, stats.resent, stats.duplicates) == (1, 1, 1), stats.events
    assert stats.restarts == 0, "the worker still held the stream's state: no tracker_restart"
    assert list(stats.workers) == [system.worker_ports[owner_index(system, ACCOUNT)]], "it stayed on its worker"
    lines = system.account_log(ACCOUNT)
    assert len(lines) == frames and len({logged(line).time for line in lines}) == frames, "one line per frame"


@pytest.fixture
def two_balancers(tmp_path: Path):
    started: list[tuple[System, Process]] = []

    def start(worker_args: list[str]) -> tuple[System, str]:
        system = make_system(tmp_path / f"system{len(started)}", n_workers=2,
                             worker_args=["--encoder", "none", *worker_args])
        system.start()
        replica, url = start_replica(system)
        started.append((system, replica))
        wait_until(lambda: replica.alive() and _sees_all(url), 60, "balancer B to see both workers")
        return system, url
    try:
        yield start
    finally:
        for system, replica in started:
            replica.terminate()
            system.stop()


def _sees_all(ws_url: str) -> bool:
    try:
        with urllib.request.urlopen(ws_url.replace("ws://", "http://").removesuffix("/ws") + "/health",
                                    timeout=1) as resp:
            return all(state == "up" for state in json.load(resp)["workers"].values())
    except (urllib.error.URLError, OSError, ValueError):
        return False


def test_a_stream_resumed_through_another_balancer_is_logged_once(two_balancers):
    system, replica_url = two_balancers([])
    stats = kill_balancer_with_a_frame_at_the_worker(system, replica_url)
    check_one_line_per_frame(system, stats)


def test_a_stream_resumed_through_another_balancer_has_one_row_per_frame(two_balancers, pg_url):
    system, replica_url = two_balancers(["--database", pg_url])
    stats = kill_balancer_with_a_frame_at_the_worker(system, replica_url)
    check_one_line_per_frame(system, stats)

    def all_rows() -> bool:  # rows are written before each reply; the killed balancer's frame too
        with psycopg.connect(pg_url) as conn:
            return conn.execute("SELECT count(*) FROM frames WHERE account = %s", (ACCOUNT,)).fetchone() == \
                (stats.frames_expected,)
    wait_until(all_rows, 30, "every frame's row")
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT stream, seq, stamp FROM frames WHERE account = %s ORDER BY seq",
                            (ACCOUNT,)).fetchall()
    assert [seq for _, seq, _ in rows] == list(range(1, stats.frames_expected + 1))
    assert {stream for stream, _, _ in rows} == {f"c:{stats.stream}"}
    lines = {logged(line).time for line in system.account_log(ACCOUNT)}
    assert {stamp_text(stamp) for _, _, stamp in rows} == lines, "each row is its frame's line"
