"""Graceful shutdown with real processes and SIGTERM: in-flight frames are
answered, new work is refused, every answered frame is logged once."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp
import pytest

from frame_logs import logged
from voicestream.logline import parse_line
from voicetools.cluster import wait_until
from voicetools.faults import pick_accounts, run_scenario, tally, until
from voicetools.paths import REPO

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sources(speech_frames):
    return speech_frames("en_example.wav", "sample1.wav", "sample3.wav")


def group_signal(process, sig: int) -> None:
    os.killpg(process.popen.pid, sig)


async def health(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url + "/health") as resp:  # 503 while the frozen worker is out: still JSON
        return await resp.json()


async def refuses_connections(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/health") as resp:
            await resp.read()
            return False
    except aiohttp.ClientConnectorError:
        return True


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_balancer_sigterm_answers_the_frame_in_flight_then_closes(vad_system, sources, event_loop):
    """On either --event-loop: SIGTERM's handler is the loop's own (uvloop's differs from asyncio's)."""
    system = vad_system(n_workers=1, balancer_args=["--forward-timeout", "60", "--shutdown-timeout", "30",
                                                    "--event-loop", event_loop])
    worker, balancer = system.workers[0], system.balancer
    frame = sources[0][5]

    async def go():
        async with aiohttp.ClientSession() as session:
            assert (await health(session, system.url))["event_loop"] == event_loop
            busy = await session.ws_connect(system.ws_url)
            idle = await session.ws_connect(system.ws_url)
            group_signal(worker, signal.SIGSTOP)  # the frame will wait at the worker
            await busy.send_str("ACCOUNTCODE=drain")
            await busy.send_bytes(frame)
            deadline = time.monotonic() + 30
            while (await health(session, system.url))["frames_in_flight"] != 1:
                assert time.monotonic() < deadline, "the frame never reached the balancer"
                await asyncio.sleep(0.02)
            group_signal(balancer, signal.SIGTERM)
            idle_close = await idle.receive(timeout=20)  # idle connections close at once...
            assert await refuses_connections(system.url)  # ...and no new ones are taken
            assert not busy.closed
            group_signal(worker, signal.SIGCONT)
            reply = await busy.receive_json(timeout=30)  # the frame in flight is answered...
            busy_close = await busy.receive(timeout=10)  # ...before its connection closes
            return idle_close, reply, busy_close
    try:
        idle_close, reply, busy_close = asyncio.run(go())
        exit_code = balancer.popen.wait(timeout=30)
    finally:
        group_signal(worker, signal.SIGCONT)
        system.stop()
    assert idle_close.type == aiohttp.WSMsgType.CLOSE and idle_close.data == aiohttp.WSCloseCode.GOING_AWAY
    assert "error" not in reply and reply["seq"] == 1 and reply["account"] == "drain"
    assert busy_close.type == aiohttp.WSMsgType.CLOSE and busy_close.data == aiohttp.WSCloseCode.GOING_AWAY
    assert exit_code == 0
    assert [logged(line).time for line in system.account_log("drain")] == [reply["time"]]


def test_balancer_sigterm_while_accounts_stream_leaves_no_frame_half_done(vad_system, sources):
    """Every frame the balancer answered is logged once; a frame it did not
    answer (it arrived as the connection closed) is not logged at all."""
    system = vad_system()
    accounts = [f"sd{i}" for i in range(12)]
    results: dict[str, list[dict]] = {a: [] for a in accounts}
    closes: dict[str, int | None] = {}

    async def stream(account: str, frames: list[bytes]) -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(system.ws_url) as ws:
            for frame in frames * 10:
                try:
                    await ws.send_str(f"ACCOUNTCODE={account}")
                    await ws.send_bytes(frame)
                except (ConnectionError, aiohttp.ClientError):
                    break
                msg = await ws.receive(timeout=30)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    closes[account] = ws.close_code
                    return
                results[account].append(json.loads(msg.data))

    async def go():
        tasks = [asyncio.create_task(stream(a, sources[i % 3])) for i, a in enumerate(accounts)]
        await until(lambda: all(len(r) >= 20 for r in results.values()), 60, "every account to stream")
        group_signal(system.balancer, signal.SIGTERM)
        await asyncio.gather(*tasks)
    try:
        asyncio.run(go())
        exit_code = system.balancer.popen.wait(timeout=30)
    finally:
        system.stop()
    assert exit_code == 0
    # Every connection was closed by the shutdown, with 1001: also a client
    # whose next frame was already on the wire when its idle socket closed
    # (its handler closes it and reads on to the client's close reply, so no
    # unread data resets the connection). That frame was not accepted (below).
    assert closes == {account: aiohttp.WSCloseCode.GOING_AWAY for account in accounts}
    for account, replies in results.items():
        assert all("error" not in r for r in replies)
        assert [logged(line).time for line in system.account_log(account)] == [r["time"] for r in replies]


def test_worker_sigterm_finishes_its_frames_and_its_accounts_move(vad_system, sources):
    system = vad_system()
    victim = 2
    accounts = pick_accounts(system, victim, affected=4, others=5, prefix="wt")
    try:
        runs, (cycle,) = asyncio.run(run_scenario(system, accounts, sources, cycles=1, warmup=0.5, outage=0.5,
                                                  after=0.5, pace=0, victims=[victim], graceful=True))
        stopped_output = system.root / f"worker-{system.worker_ports[victim]}.out"
    finally:
        system.stop()
    assert cycle.exit_code == 0 and cycle.affected
    t = tally(system, runs)
    assert not t.failures and t.errors == 0, t.error_messages
    assert t.sent == t.replied == t.logged and t.lost == 0 and t.duplicated == 0
    for account in accounts:
        assert all(parse_line(line) for line in system.account_log(account)), "whole lines only"
    assert sorted(cycle.affected) == sorted(accounts[:4])
    for account in cycle.affected:
        frames = runs[account].frames
        assert frames[0].worker == cycle.port
        # Frames that were at the worker when SIGTERM came were answered by it;
        # the rest of the outage went to one other worker.
        during = [f.worker for f in frames if cycle.kill_at <= f.replied < cycle.restart_at]
        assert len(set(during) - {cycle.port}) == 1
        assert frames[-1].worker == cycle.port, "back on its worker after the restart"
    assert "Traceback" not in stopped_output.read_text()


def test_the_prestop_drain_moves_a_workers_accounts_before_sigterm(vad_system, sources):
    """python -m worker.drain (the Kubernetes preStop hook): the worker keeps
    running, answers 503 on /health, and the balancer moves its accounts."""
    system = vad_system(n_workers=2)
    try:
        drained = 0
        account = pick_accounts(system, drained, affected=1, others=0, prefix="drain")[0]
        before = asyncio.run(one_frame(system.ws_url, account, sources))
        done = subprocess.run([sys.executable, "-m", "worker.drain", "--port", str(system.worker_ports[drained]),
                               "--wait", "0"], cwd=REPO, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"status": "draining", "port": system.worker_ports[drained]}
        wait_until(lambda: health_status(system.worker_url(drained)) == 503, 10,
                   "the drained worker's /health to say 503")
        wait_until(lambda: not balancer_sees(system, drained), 10, "the balancer to take the drained worker out")
        after = asyncio.run(one_frame(system.ws_url, account, sources))
        assert system.workers[drained].alive(), "draining is not stopping"
    finally:
        system.stop()
    assert before["worker"] == system.worker_ports[drained]
    assert after["worker"] == system.worker_ports[1 - drained] and "error" not in after


async def one_frame(url: str, account: str, sources) -> dict:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str(f"ACCOUNTCODE={account}")
        await ws.send_bytes(sources[0][0])
        return await ws.receive_json(timeout=30)


def health_status(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def balancer_sees(system, index: int) -> bool:
    with urllib.request.urlopen(f"{system.url}/health", timeout=2) as resp:
        return json.load(resp)["workers"][system.worker_url(index)] == "up"
