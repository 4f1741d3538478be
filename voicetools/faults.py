"""Fault injection: kill -9 (or SIGTERM) a worker while many accounts stream,
restart it, and count what happened to every frame.

    .venv/bin/voicestream-faults                        # 30 accounts, 3 kill/restart cycles
    .venv/bin/voicestream-faults --accounts 60 --cycles 5 --pace 0.05
    .venv/bin/voicestream-faults --sigterm                # graceful stops instead

It starts the real system (3 workers with --encoder none + balancer,
voicetools.cluster) in a temporary directory. Each account is one WebSocket
connection sending 100 ms frames of real speech (--speech-dir, by default
../shared/data/speech beside the checkout, else its data/*.wav), one at a
time: the next frame goes --pace seconds after the previous reply. Each
cycle: stream --warmup seconds, kill -9 the worker that owns the most
accounts, keep streaming --outage seconds, restart it, wait until its
accounts are back on it, stream --after seconds.

Afterwards every frame is matched to the account's log by the reply's "time"
(the balancer's stamp, which is the log line's timestamp) and it prints:
  sent, replied, errors    frames sent; replies received; replies with "error"
  logged                   frames with a log line
  lost                     frames without a successful reply or without a line
  duplicated               frames with more than one line, plus lines no reply accounts for
  malformed lines          lines not in the log-line format (voicestream.logline); they
                           count for no frame
  saved duplicates         replies marked "duplicate": the killed worker had already
                           logged the frame, so the retry's worker did not log it again
  reroute                  kill -> first reply from another worker, per affected account
  return                   restarted worker's /health up -> first reply from it, per account
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import soundfile as sf

from balancer.routing import pick_worker
from voicestream.logline import parse_line
from voicestream.wav import FRAME_SECONDS, split_frames
from voicetools.cluster import System, make_system
from voicetools.paths import DATA, SPEECH
from voicetools.percentile import percentile

PROG = "voicestream-faults"


def frames_of(path: Path, seconds: float = 20.0) -> list[bytes]:
    """The whole 100 ms frames in the first seconds of a recording (first channel)."""
    samples, rate = sf.read(path, dtype="int16", always_2d=True)
    step = round(rate * FRAME_SECONDS)
    whole = min(len(samples), int(rate * seconds)) // step * step
    return split_frames(samples[:whole, 0], rate, FRAME_SECONDS)


def speech_sources(speech_dir: Path = SPEECH) -> list[list[bytes]]:
    paths = sorted(speech_dir.glob("*.wav")) or sorted(DATA.glob("*.wav"))
    if not paths:
        raise SystemExit(f"no speech: neither {speech_dir} nor {DATA} has WAVs")
    return [frames_of(p) for p in paths]


@dataclass
class Frame:
    seq: int
    sent: float
    reply: dict | None = None
    replied: float | None = None

    @property
    def worker(self) -> int | None:
        return self.reply.get("worker") if self.reply else None


@dataclass
class AccountRun:
    account: str
    frames: list[Frame] = field(default_factory=list)
    failure: str | None = None

    def replies_after(self, t: float) -> list[Frame]:
        return [f for f in self.frames if f.replied is not None and f.replied >= t]

    def first_reply(self, after: float, by: Callable[[Frame], bool]) -> float | None:
        """When the first frame answered at `after` or later for which by(frame) holds was answered."""
        return next((f.replied for f in self.frames if f.replied is not None and f.replied >= after and by(f)), None)


async def stream_account(url: str, run: AccountRun, frames: list[bytes], offset: int, pace: float,
                         stop: asyncio.Event, token: str = "") -> None:
    """Send one frame at a time; the next after the previous reply (and pace)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(headers=headers) as session, session.ws_connect(url) as ws:
            i = offset
            while not stop.is_set():
                frame = Frame(seq=len(run.frames) + 1, sent=time.monotonic())
                run.frames.append(frame)
                await ws.send_str(f"ACCOUNTCODE={run.account}")
                await ws.send_bytes(frames[i % len(frames)])
                frame.reply = await ws.receive_json(timeout=60)
                frame.replied = time.monotonic()
                i += 1
                if pace:
                    await asyncio.sleep(pace)
            await ws.send_str("CLOSE")
    except (aiohttp.ClientError, TimeoutError, TypeError, ValueError) as exc:
        run.failure = f"{exc.__class__.__name__}: {exc}"


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll check every 10 ms without blocking the loop; TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)


def owner_index(system: System, account: str) -> int:
    urls = [system.worker_url(i) for i in range(len(system.worker_ports))]
    return urls.index(pick_worker(account, urls))


def pick_accounts(system: System, victim: int, affected: int, others: int, prefix: str = "acct") -> list[str]:
    """`affected` accounts that live on worker `victim`, then `others` that do not."""
    mine: list[str] = []
    theirs: list[str] = []
    i = 0
    while len(mine) < affected or len(theirs) < others:
        account = f"{prefix}{i}"
        (mine if owner_index(system, account) == victim else theirs).append(account)
        i += 1
    return mine[:affected] + theirs[:others]


@dataclass
class Cycle:
    victim: int
    port: int
    affected: list[str]
    graceful: bool = False  # SIGTERM instead of kill -9
    exit_code: int | None = None
    freezes: int = 0  # SIGSTOPs until the worker was caught between a log line and its reply
    kill_at: float = 0.0
    restart_at: float = 0.0  # the new process is started after this: no reply from it comes earlier
    up_at: float = 0.0  # its /health answered (the balancer's own poll may have seen it a little sooner)
    reroute: dict[str, float] = field(default_factory=dict)
    back: dict[str, float] = field(default_factory=dict)


def logged_unanswered(system: System, runs: dict[str, AccountRun], accounts: list[str]) -> bool:
    """Has some account a log line whose reply has not reached its client?"""
    return any(len(system.account_log(a)) > sum(1 for f in runs[a].frames if f.reply and "time" in f.reply)
               for a in accounts)


async def freeze_after_a_logged_line(system: System, runs: dict[str, AccountRun], victim: int,
                                     accounts: list[str], settle: float = 0.3, attempts: int = 500) -> int:
    """SIGSTOP the worker at random moments until it is frozen between writing
    a frame's log line and sending the reply; leaves it frozen. Returns the
    number of freezes it took."""
    pgid = system.workers[victim].pid
    for attempt in range(1, attempts + 1):
        os.killpg(pgid, signal.SIGSTOP)
        await asyncio.sleep(settle)  # replies that left the worker before it froze arrive meanwhile
        if logged_unanswered(system, runs, accounts):
            return attempt
        os.killpg(pgid, signal.SIGCONT)
        await asyncio.sleep(random.uniform(0.0, 0.05))
    raise TimeoutError(f"worker never caught between a log line and its reply in {attempts} tries")


async def kill_cycle(system: System, runs: dict[str, AccountRun], victim: int, outage: float,
                     graceful: bool = False, after_logged_line: bool = False, timeout: float = 60.0) -> Cycle:
    port = system.worker_ports[victim]
    cycle = Cycle(victim, port, [a for a in runs if owner_index(system, a) == victim], graceful)
    if after_logged_line:
        cycle.freezes = await freeze_after_a_logged_line(system, runs, victim, cycle.affected)
    cycle.kill_at = time.monotonic()
    if graceful:  # SIGTERM and wait for the exit
        cycle.exit_code = await asyncio.to_thread(system.workers[victim].terminate)
    else:
        # The signal here, so that at most the one frame each account has in
        # flight is answered by the worker after kill_at; reaping the process
        # takes a while, in a thread, and replies keep arriving meanwhile.
        system.workers[victim].kill(reap=False)
        await asyncio.to_thread(system.workers[victim].kill)

    def rerouted() -> bool:
        for account in [a for a in cycle.affected if a not in cycle.reroute]:
            moved = runs[account].first_reply(cycle.kill_at, lambda f: f.worker not in (None, port))
            if moved is not None:
                cycle.reroute[account] = moved - cycle.kill_at
        return len(cycle.reroute) == len(cycle.affected)
    await until(rerouted, timeout, f"the accounts of worker {port} to reach another worker")
    await asyncio.sleep(max(outage - (time.monotonic() - cycle.kill_at), 0))
    cycle.restart_at = time.monotonic()
    await asyncio.to_thread(system.restart_worker, victim)
    cycle.up_at = time.monotonic()

    def returned() -> bool:
        for account in [a for a in cycle.affected if a not in cycle.back]:
            home = runs[account].first_reply(cycle.up_at, lambda f: f.worker == port)
            if home is not None:
                cycle.back[account] = home - cycle.up_at
        return len(cycle.back) == len(cycle.affected)
    await until(returned, timeout, f"the accounts of worker {port} to return to it")
    return cycle


@dataclass
class Tally:
    sent: int = 0
    replied: int = 0
    errors: int = 0
    logged: int = 0
    lost: int = 0
    duplicated: int = 0
    saved_duplicates: int = 0
    malformed: int = 0  # log lines not in the contract format (torn, or garbage)
    failures: list[str] = field(default_factory=list)
    error_messages: Counter[str] = field(default_factory=Counter)


def tally(system: System, runs: dict[str, AccountRun]) -> Tally:
    """Match every frame to its account's log by stamp. Only well-formed lines
    count: a frame whose line is malformed is lost."""
    t = Tally()
    for account, run in runs.items():
        stamps: Counter[str] = Counter()
        for line in system.account_log(account):
            parsed = parse_line(line)
            if parsed is None:
                t.malformed += 1
            else:
                stamps[parsed.time] += 1
        accounted = set()
        for frame in run.frames:
            t.sent += 1
            if frame.reply is None:
                t.lost += 1
                continue
            t.replied += 1
            if "error" in frame.reply:
                t.errors += 1
                t.lost += 1
                t.error_messages[frame.reply["error"]] += 1
                continue
            t.saved_duplicates += bool(frame.reply.get("duplicate"))
            n = stamps.get(frame.reply.get("time", ""), 0)
            accounted.add(frame.reply.get("time"))
            t.logged += n > 0
            t.lost += n == 0
            t.duplicated += max(n - 1, 0)
        t.duplicated += sum(n for stamp, n in stamps.items() if stamp not in accounted)
        if run.failure:
            t.failures.append(f"{account}: {run.failure}")
    return t


async def run_scenario(system: System, accounts: list[str], sources: list[list[bytes]], *, cycles: int,
                       warmup: float, outage: float, after: float, pace: float,
                       victims: list[int] | None = None, graceful: bool = False, after_logged_line: bool = False,
                       token: str = "") -> tuple[dict[str, AccountRun], list[Cycle]]:
    runs = {a: AccountRun(a) for a in accounts}
    stop = asyncio.Event()
    url = system.ws_url
    tasks = [asyncio.create_task(stream_account(url, runs[a], sources[i % len(sources)], 7 * i, pace, stop, token))
             for i, a in enumerate(accounts)]
    done: list[Cycle] = []
    try:
        await until(lambda: all(len(r.replies_after(0)) >= 3 for r in runs.values()), 60, "every account to stream")
        for c in range(cycles):
            await asyncio.sleep(warmup)
            if victims:
                victim = victims[c % len(victims)]
            else:  # the worker that owns the most accounts
                owners = Counter(owner_index(system, a) for a in accounts)
                victim = owners.most_common()[c % len(owners)][0]
            done.append(await kill_cycle(system, runs, victim, outage, graceful, after_logged_line))
        await asyncio.sleep(after)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return runs, done


def seconds(values: list[float]) -> str:
    p50 = percentile(values, 50)
    if p50 is None:
        return "-"
    return f"min {min(values) * 1000:.0f} ms, p50 {p50 * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


def report(t: Tally, done: list[Cycle], elapsed: float, accounts: int) -> dict:
    reroute = [s for c in done for s in c.reroute.values()]
    back = [s for c in done for s in c.back.values()]
    how = "SIGTERM" if done and done[0].graceful else "kill -9"
    print(f"accounts {accounts}, {len(done)} {how} / restart cycles, {elapsed:.1f} s")
    print(f"frames sent        {t.sent}")
    print(f"replied            {t.replied}")
    print(f"errors             {t.errors}" + (f"  {dict(t.error_messages)}" if t.errors else ""))
    print(f"logged             {t.logged}")
    print(f"lost               {t.lost}")
    print(f"duplicated         {t.duplicated}")
    print(f"malformed lines    {t.malformed}")
    print(f"saved duplicates   {t.saved_duplicates}  (logged by the killed worker before it could reply)")
    for c in done:
        exited = f", exit code {c.exit_code}" if c.graceful else ""
        exited += f", caught after a log line on freeze {c.freezes}" if c.freezes else ""
        print(f"cycle: stopped worker {c.port} ({len(c.affected)} accounts{exited}): "
              f"reroute {seconds(list(c.reroute.values()))}; return {seconds(list(c.back.values()))}")
    print(f"reroute (kill -> first reply from another worker):  {seconds(reroute)}")
    print(f"return (worker up again -> first reply from it):   {seconds(back)}")
    for failure in t.failures:
        print(f"stream failed: {failure}")
    return {"accounts": accounts, "cycles": len(done), "how": how, "seconds": round(elapsed, 1), "sent": t.sent,
            "replied": t.replied, "errors": t.errors, "logged": t.logged, "lost": t.lost,
            "duplicated": t.duplicated, "saved_duplicates": t.saved_duplicates, "malformed": t.malformed,
            "reroute_ms": [round(s * 1000, 1) for s in reroute], "return_ms": [round(s * 1000, 1) for s in back],
            "stream_failures": t.failures, "exit_codes": [c.exit_code for c in done if c.graceful]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--accounts", type=int, default=30)
    p.add_argument("--cycles", type=int, default=3, help="kill -9 / restart cycles")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of streaming before each kill")
    p.add_argument("--outage", type=float, default=3.0, help="seconds the killed worker stays down")
    p.add_argument("--after", type=float, default=3.0, help="seconds of streaming after the last return")
    p.add_argument("--pace", type=float, default=0.1, help="seconds between a reply and the next frame")
    p.add_argument("--sigterm", action="store_true", help="stop the worker gracefully (SIGTERM) instead of kill -9")
    p.add_argument("--after-logged-line", action="store_true",
                   help="kill only when the worker has written a frame's log line but not sent its reply "
                        "(found by freezing it with SIGSTOP at random moments and comparing logs with replies)")
    p.add_argument("--root", type=Path, help="directory for logs and process output (default: a temporary one)")
    p.add_argument("--speech-dir", type=Path, default=SPEECH, help=f"WAVs to stream (default: {SPEECH}, else {DATA})")
    p.add_argument("--json-out", type=Path)
    a = p.parse_args(argv)
    sources = speech_sources(a.speech_dir)
    root = a.root or Path(tempfile.mkdtemp(prefix="faults-"))
    system = make_system(root, worker_args=["--encoder", "none"])
    print(f"starting 3 workers and the balancer in {root}", flush=True)
    system.start()
    try:
        accounts = [f"fault{i:03d}" for i in range(a.accounts)]
        started = time.monotonic()
        runs, done = asyncio.run(run_scenario(system, accounts, sources, cycles=a.cycles, warmup=a.warmup,
                                              outage=a.outage, after=a.after, pace=a.pace, graceful=a.sigterm,
                                              after_logged_line=a.after_logged_line))
        elapsed = time.monotonic() - started
    finally:
        system.stop()
    result = report(tally(system, runs), done, elapsed, len(accounts))
    if a.json_out:
        a.json_out.write_text(json.dumps(result, indent=2))
    ok = (result["lost"] == 0 and result["duplicated"] == 0 and result["errors"] == 0 and result["malformed"] == 0
          and not result["stream_failures"] and all(code == 0 for code in result["exit_codes"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
