"""Stream frame directories to the balancer, one WebSocket connection and one
ACCOUNTCODE per directory, all directories at once.

    .venv/bin/voicestream-replay                     # every data/chunks_* at real-time pace
    .venv/bin/voicestream-replay data/chunks_a --accounts 1691 --form json --pace fast
    .venv/bin/voicestream-replay --url ws://b1:6001/ws,ws://b2:6001/ws   # the second if the first fails

Each frame waits for its reply before the next is sent (the balancer answers a
connection's frames in order), so the latency measured is client send ->
reply. Each account's stream is named and its frames numbered
(stream=...;seq=...): when a connection drops (the balancer killed or
restarted, the network gone), it reconnects, with backoff, to the next URL,
and sends again the frame that had no reply; one a worker already processed
is answered as a duplicate and not recorded twice (docs/protocol.md). The
importable core is ``replay(targets, options)``.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import soundfile as sf

from voicestream.accounts import invalid_account_message, is_valid_account
from voicetools.paths import DATA
from voicetools.percentile import percentile

PROG = "voicestream-replay"
FORMS = ("binary", "json", "literal")
PACES = ("realtime", "fast")
CHUNK_PREFIX = "chunks_"
MAX_ERRORS_KEPT = 5
# aiohttp drops the body of a refused handshake, where the balancer explains.
HANDSHAKE_HINTS = {
    401: "missing or wrong token: pass --token or set REPLAY_TOKEN",
    404: "no WebSocket endpoint at this path: the balancer serves / and /ws",
    429: "the balancer is at its connection limit",
}
# Refusals no reconnect cures.
FATAL_HANDSHAKES = frozenset({401, 403, 404})
# Backoff between attempts to reconnect: doubling from the first, at most the
# last. A balancer restarted under systemd or Kubernetes listens again within
# a second or two; the next replica behind a load balancer at once.
RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 2.0
MAX_EVENTS_KEPT = 20


@dataclass(frozen=True, slots=True)
class Frame:
    name: str
    wav: bytes
    seconds: float  # its duration: the real-time pace sends frames this far apart


@dataclass(frozen=True)
class Target:
    """One account's stream: its frames in sending order."""
    account: str
    frames: tuple[Frame, ...]
    source: str = ""


@dataclass(frozen=True)
class ReplayOptions:
    url: str = "ws://127.0.0.1:6001/ws"
    form: str = "binary"
    # None: real time (each frame's own duration apart); 0: as fast as replies come.
    interval_ms: float | None = None
    token: str = ""
    repeat: int = 1
    reply_timeout: float = 10.0
    connect_timeout: float = 10.0
    # Balancers to reconnect to, after url, in turn (url again after the last).
    more_urls: tuple[str, ...] = ()
    # Name each stream and number its frames, and after a dropped connection
    # reconnect and send again the frame without a reply; False: neither, as
    # clients before streams could be resumed.
    resume: bool = True
    reconnects: int = 5  # attempts in a row that end before a reply, then the account gives up

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.more_urls)


@dataclass
class AccountStats:
    account: str
    source: str
    frames_expected: int
    frames_sent: int = 0
    replies: int = 0
    errors: int = 0
    voiced: int = 0
    workers: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stream: str = ""  # the stream's name, when frames are numbered
    reconnects: int = 0  # connections opened after the first
    resent: int = 0  # frames sent again on a new connection
    duplicates: int = 0  # replies saying a worker had already processed the frame
    restarts: int = 0  # replies with a tracker_restart: a worker without the stream's state took it on
    events: list[str] = field(default_factory=list)  # the reconnects, for the report

    def event(self, message: str) -> None:
        if len(self.events) < MAX_EVENTS_KEPT:
            self.events.append(message)

    @property
    def missing(self) -> int:
        return self.frames_expected - self.replies

    @property
    def voice_ratio(self) -> float | None:
        answered = self.replies - self.errors
        return self.voiced / answered if answered else None

    def latency(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    def error(self, message: str) -> None:
        self.errors += 1
        self.note(message)

    def note(self, message: str) -> None:
        if len(self.error_messages) < MAX_ERRORS_KEPT:
            self.error_messages.append(message)

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("latencies_ms")
        d["workers"] = {str(k): v for k, v in self.workers.items()}
        d.update(missing=self.missing, voice_ratio=self.voice_ratio,
                 latency_ms={"p50": self.latency(50), "p90": self.latency(90), "p99": self.latency(99),
                             "max": max(self.latencies_ms, default=None)})
        return d


def account_for(directory: Path) -> str:
    """chunks_us-male.8k -> 'us-male_8k': the directory name less its prefix,
    with characters an ACCOUNTCODE cannot hold replaced by '_'."""
    name = directory.resolve().name if directory.name in ("", ".", "..") else directory.name
    name = name.removeprefix(CHUNK_PREFIX)
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "account"


def unique_accounts(names: Sequence[str]) -> list[str]:
    """Derived names made distinct: two streams on one account would share its VAD state."""
    seen: Counter = Counter()
    out = []
    for name in names:
        seen[name] += 1
        candidate = name if seen[name] == 1 else f"{name[:60]}_{seen[name]}"
        out.append(candidate)
    return out


def wav_seconds(wav: bytes) -> float | None:
    try:
        info = sf.info(io.BytesIO(wav))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    return info.frames / info.samplerate if info.samplerate else None


def load_frames(directory: Path, default_seconds: float = 0.1) -> tuple[Frame, ...]:
    """The directory's *.wav files in name order (chunk_00000.wav, ...). A file
    that is not readable audio is still sent (the server should reject it)
    and is paced as default_seconds."""
    frames = []
    for path in sorted(directory.glob("*.wav")):
        wav = path.read_bytes()
        seconds = wav_seconds(wav)
        frames.append(Frame(path.name, wav, default_seconds if seconds is None else seconds))
    return tuple(frames)


def stream_name(account: str) -> str:
    """A name for one run's stream of an account: distinct on every run, so
    that frames of an earlier run are never taken for this one's."""
    return f"{account[:40]}-{uuid.uuid4().hex[:16]}"


def encode(form: str, account: str, wav: bytes, stream: str | None = None, seq: int | None = None) -> list[str | bytes]:
    """The WebSocket messages that carry one frame in the given packet form;
    with stream and seq, numbered: frame seq of that stream."""
    text = f"ACCOUNTCODE={account}" + (f";stream={stream};seq={seq}" if stream is not None else "")
    if form == "binary":
        return [text, wav]
    if form == "json":
        return [json.dumps({"text": text, "binary_data": base64.b64encode(wav).decode("ascii")})]
    if form == "literal":
        return [str({"text": text, "binary_data": wav})]
    raise ValueError(f"unknown packet form {form!r}: use one of {', '.join(FORMS)}")


@dataclass
class Progress:
    """Where one account's stream is, across its connections."""
    next: int = 0  # the frame to send next, and the one awaiting a reply (seq next + 1)
    first_sent: float | None = None  # when that frame was first sent, if it was (perf_counter)
    failures: int = 0  # connection attempts in a row that ended before a reply
    url: int = 0  # which of the URLs to connect to


class Ended(Exception):
    """A connection that ended before its stream did; the message says how."""


async def replay_account(session: aiohttp.ClientSession, target: Target, options: ReplayOptions) -> AccountStats:
    """Stream one target, over as many connections as it takes; never raises
    for network trouble: what went wrong is in the stats."""
    frames = target.frames * options.repeat
    stream = stream_name(target.account) if options.resume else None
    stats = AccountStats(target.account, target.source, len(frames), stream=stream or "")
    messages = [encode(options.form, target.account, frame.wav, stream, seq)
                for seq, frame in enumerate(frames, start=1)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    # The schedule is kept against one monotonic start, so late replies (and
    # reconnects) are caught up on instead of accumulating as drift.
    due, elapsed = [], 0.0
    for frame in frames:
        due.append(started + elapsed)
        elapsed += frame.seconds if options.interval_ms is None else options.interval_ms / 1000
    progress = Progress()
    urls = options.urls
    while progress.next < len(frames):
        url = urls[progress.url]
        try:
            await stream_over(session, url, messages, due, progress, stats, options)
            break  # every frame answered
        except aiohttp.WSServerHandshakeError as exc:
            hint = HANDSHAKE_HINTS.get(exc.status, exc.message)
            stats.note(f"connection refused by server: HTTP {exc.status} ({hint})")
            if exc.status in FATAL_HANDSHAKES:
                break
            how = f"refused with HTTP {exc.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if progress.failures == 0 or not options.resume:
                stats.note(f"connection failed: {exc.__class__.__name__}: {exc}")
            how = f"failed ({exc.__class__.__name__})"
        except Ended as exc:
            how = str(exc)
        progress.failures += 1
        if not options.resume or progress.failures > options.reconnects:
            if options.resume:
                stats.note(f"gave up after {progress.failures} connection attempts in a row without a reply")
            break
        progress.url = (progress.url + 1) % len(urls)
        wait = min(RECONNECT_FIRST_SECONDS * 2 ** (progress.failures - 1), RECONNECT_MAX_SECONDS)
        stats.event(f"connection to {url} {how} at frame {progress.next + 1}: reconnecting to "
                    f"{urls[progress.url]} in {wait:g} s")
        await asyncio.sleep(wait)
    stats.seconds = loop.time() - started
    return stats


async def stream_over(session: aiohttp.ClientSession, url: str, messages: list[list[str | bytes]],
                      due: list[float], progress: Progress, stats: AccountStats, options: ReplayOptions) -> None:
    """Sends the stream's frames from progress.next on over one connection,
    each after the reply to the one before, then CLOSE; Ended when the
    connection ends first (the frame without a reply is the next one sent)."""
    headers = {"Authorization": f"Bearer {options.token}"} if options.token else {}
    loop = asyncio.get_running_loop()
    async with session.ws_connect(url, headers=headers, heartbeat=None, autoping=True,
                                  timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                                  max_msg_size=0) as ws:
        if progress.next or stats.frames_sent:
            stats.reconnects += 1
        while progress.next < len(messages):
            i = progress.next
            if progress.first_sent is None and due[i] > loop.time():
                await asyncio.sleep(due[i] - loop.time())
            try:
                for part in messages[i]:
                    await (ws.send_bytes(part) if isinstance(part, bytes) else ws.send_str(part))
            except (ConnectionError, aiohttp.ClientError) as exc:
                raise Ended(f"failed sending ({exc.__class__.__name__})") from None
            if progress.first_sent is None:
                progress.first_sent = time.perf_counter()
                stats.frames_sent += 1
            else:
                stats.resent += 1
            if not await receive_reply(ws, stats, i + 1, progress.first_sent, options.reply_timeout,
                                       quiet=options.resume):
                if not options.resume:
                    raise Ended("ended")  # later replies could no longer be matched to their frames
                code = f" ({ws.close_code})" if ws.close_code is not None else ""
                raise Ended(f"ended before the reply{code}")
            progress.next, progress.first_sent, progress.failures = i + 1, None, 0
        await ws.send_str("CLOSE")


async def receive_reply(ws: aiohttp.ClientWebSocketResponse, stats: AccountStats, seq: int,
                        sent: float, timeout: float, quiet: bool = False) -> bool:
    """Read the reply to frame seq; False when the connection is no longer
    usable (quiet: the caller reconnects, and says so)."""
    try:
        msg = await ws.receive(timeout=timeout)
    except TimeoutError:
        if not quiet:
            stats.note(f"frame {seq}: no reply within {timeout:g} s")
        return False
    if msg.type != aiohttp.WSMsgType.TEXT:
        reason = f" ({ws.close_code})" if ws.close_code is not None else ""
        if not quiet:
            stats.note(f"frame {seq}: connection ended before its reply: {msg.type.name}{reason}")
        return False
    latency_ms = (time.perf_counter() - sent) * 1000
    stats.replies += 1
    try:
        reply = json.loads(msg.data)
    except json.JSONDecodeError:
        stats.error(f"frame {seq}: reply is not JSON: {msg.data[:80]!r}")
        return True
    if not isinstance(reply, dict):
        stats.error(f"frame {seq}: reply is not a JSON object: {msg.data[:80]!r}")
        return True
    stats.latencies_ms.append(latency_ms)
    stats.duplicates += bool(reply.get("duplicate"))
    if "error" in reply:
        if not reply.get("duplicate"):  # a duplicate's error: processed before, its analysis not kept
            stats.error(f"frame {seq}: {reply['error']}")
        return True
    if reply.get("account") != stats.account or reply.get("seq") != seq:
        stats.error(f"frame {seq}: reply belongs to account {reply.get('account')!r} seq {reply.get('seq')!r}")
        return True
    events = reply.get("events")
    if isinstance(events, list):
        stats.restarts += sum(isinstance(e, dict) and e.get("type") == "tracker_restart" for e in events)
    stats.voiced += reply.get("voice") == 1
    if "worker" in reply:
        stats.workers[reply["worker"]] += 1
    return True


async def replay(targets: Sequence[Target], options: ReplayOptions = ReplayOptions()) -> list[AccountStats]:
    """Stream every target concurrently; stats in the targets' order."""
    if options.form not in FORMS:
        raise ValueError(f"unknown packet form {options.form!r}: use one of {', '.join(FORMS)}")
    if options.repeat < 1:
        raise ValueError("repeat must be at least 1")
    connector = aiohttp.TCPConnector(limit=0)  # one connection per account, however many
    timeout = aiohttp.ClientTimeout(total=None, connect=options.connect_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return list(await asyncio.gather(*(replay_account(session, t, options) for t in targets)))


def targets_from_dirs(directories: Sequence[Path], accounts: Sequence[str] | None = None) -> list[Target]:
    names = list(accounts) if accounts else unique_accounts([account_for(d) for d in directories])
    return [Target(name, load_frames(d), str(d)) for d, name in zip(directories, names, strict=True)]


# ---------------------------------------------------------------- command line

def format_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(stats: Sequence[AccountStats]) -> str:
    header = ("account", "frames", "replies", "errors", "voice", "workers", "p50 ms", "p99 ms")
    rows = [header]
    for s in stats:
        ratio = "-" if s.voice_ratio is None else f"{s.voice_ratio:.0%}"
        workers = ",".join(str(w) for w, _ in s.workers.most_common()) or "-"
        rows.append((s.account, str(s.frames_sent), str(s.replies), str(s.errors), ratio, workers,
                     format_ms(s.latency(50)), format_ms(s.latency(99))))
    all_latencies = [ms for s in stats for ms in s.latencies_ms]
    rows.append(("TOTAL", str(sum(s.frames_sent for s in stats)), str(sum(s.replies for s in stats)),
                 str(sum(s.errors for s in stats)), "", "",
                 format_ms(percentile(all_latencies, 50)), format_ms(percentile(all_latencies, 99))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 or i == 5 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


@dataclass(frozen=True)
class CliArgs:
    directories: tuple[Path, ...]
    accounts: tuple[str, ...] | None
    options: ReplayOptions
    json_out: Path | None


def parse_args(argv: Sequence[str] | None = None) -> CliArgs:
    env = os.environ.get
    data_dir = Path(env("DATA_DIR", str(DATA)))
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Stream WAV frame directories to the balancer over WebSocket: one connection and one "
                    "ACCOUNTCODE per directory, all directories concurrently. Each frame waits for its reply. "
                    "Prints per-account frames, replies, errors, voice ratio, workers and latency. "
                    "Exit status: 0 when every frame got a reply without error, 1 otherwise.")
    p.add_argument("directories", nargs="*", type=Path,
                   help=f"frame directories (default: every {data_dir}/chunks_* [DATA_DIR])")
    p.add_argument("--url", default=env("REPLAY_URL", "ws://127.0.0.1:6001/ws"),
                   help="balancer WebSocket URL, or several, comma-separated: after a dropped connection the "
                        "next one is tried (default: %(default)s) [REPLAY_URL]")
    p.add_argument("--form", choices=FORMS, default=env("REPLAY_FORM", "binary"),
                   help="packet form: binary = text 'ACCOUNTCODE=x' then a binary WAV message; "
                        "json = {\"text\", \"binary_data\": base64}; literal = Python dict literal with bytes "
                        "(default: %(default)s) [REPLAY_FORM]")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--pace", choices=PACES, default=env("REPLAY_PACE", "realtime"),
                      help="realtime: each frame its own duration (100 ms) after the previous, on a "
                           "monotonic schedule; fast: next frame as soon as the reply arrives "
                           "(default: %(default)s) [REPLAY_PACE]")
    pace.add_argument("--interval-ms", type=float, default=None,
                      help="send a frame every N ms instead (0 = fast); overrides --pace")
    p.add_argument("--accounts", default=env("REPLAY_ACCOUNTS", ""),
                   help="comma-separated ACCOUNTCODEs, one per directory (default: the directory name "
                        "without 'chunks_', reduced to A-Z a-z 0-9 _ -) [REPLAY_ACCOUNTS]")
    p.add_argument("--token", default=env("REPLAY_TOKEN", env("AUTH_TOKEN", "")),
                   help="sent as 'Authorization: Bearer <token>' [REPLAY_TOKEN, else AUTH_TOKEN]")
    p.add_argument("--repeat", type=int, default=int(env("REPLAY_REPEAT", "1")),
                   help="stream each directory N times over its connection (default: %(default)s) [REPLAY_REPEAT]")
    p.add_argument("--reply-timeout", type=float, default=float(env("REPLAY_REPLY_TIMEOUT", "10")),
                   help="seconds to wait for a reply before giving up on that connection "
                        "(default: %(default)s) [REPLAY_REPLY_TIMEOUT]")
    p.add_argument("--reconnects", type=int, default=int(env("REPLAY_RECONNECTS", "5")),
                   help="connection attempts in a row that may end before a reply (refused, dropped) before an "
                        "account gives up; each is made to the next --url, after a backoff from "
                        f"{RECONNECT_FIRST_SECONDS:g} s doubling to {RECONNECT_MAX_SECONDS:g} s "
                        "(default: %(default)s) [REPLAY_RECONNECTS]")
    p.add_argument("--no-resume", action="store_true",
                   help="send frames without a stream name and numbers (stream=...;seq=...), and do not reconnect: "
                        "as a client from before streams could be resumed")
    p.add_argument("--json-out", type=Path, default=None, help="also write the per-account stats to this JSON file")
    a = p.parse_args(argv)

    directories = tuple(a.directories) or tuple(sorted(d for d in data_dir.glob(f"{CHUNK_PREFIX}*") if d.is_dir()))
    if not directories:
        p.error(f"no frame directories given and no {data_dir}/{CHUNK_PREFIX}* found: run voicestream-split first")
    for d in directories:
        if not d.is_dir():
            p.error(f"{d} is not a directory")
        if not any(d.glob("*.wav")):
            p.error(f"{d} holds no .wav frames")
    accounts = None
    if a.accounts:
        accounts = tuple(x.strip() for x in a.accounts.split(","))
        if len(accounts) != len(directories):
            p.error(f"--accounts lists {len(accounts)} codes for {len(directories)} directories")
        bad = [x for x in accounts if not is_valid_account(x)]
        if bad:
            p.error(invalid_account_message(bad[0]))
        if len(set(accounts)) != len(accounts):
            p.error("--accounts must be distinct: two streams on one account would share its VAD state")
    if a.repeat < 1:
        p.error("--repeat must be at least 1")
    if a.interval_ms is not None and a.interval_ms < 0:
        p.error("--interval-ms must not be negative")
    if a.reply_timeout <= 0:
        p.error("--reply-timeout must be positive")
    if a.reconnects < 0:
        p.error("--reconnects must not be negative")
    urls = [u.strip() for u in a.url.split(",") if u.strip()]
    if not urls:
        p.error("--url needs at least one URL")
    bad = [u for u in urls if not u.startswith(("ws://", "wss://"))]
    if bad:
        p.error(f"--url takes ws:// or wss:// URLs, got {bad[0]!r}")
    interval = a.interval_ms if a.interval_ms is not None else (0.0 if a.pace == "fast" else None)
    options = ReplayOptions(url=urls[0], more_urls=tuple(urls[1:]), form=a.form, interval_ms=interval,
                            token=a.token, repeat=a.repeat, reply_timeout=a.reply_timeout,
                            resume=not a.no_resume, reconnects=a.reconnects)
    return CliArgs(directories, accounts, options, a.json_out)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    targets = targets_from_dirs(args.directories, args.accounts)
    o = args.options
    pace = "real time" if o.interval_ms is None else ("fast" if o.interval_ms == 0 else f"every {o.interval_ms:g} ms")
    print(f"replaying {len(targets)} stream(s) to {', '.join(o.urls)} ({o.form} packets, {pace}"
          f"{f', {o.repeat} times' if o.repeat > 1 else ''}): "
          + ", ".join(f"{t.account} ({len(t.frames)} frames)" for t in targets), flush=True)
    try:
        stats = asyncio.run(replay(targets, o))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(format_table(stats))
    for s in stats:
        for event in s.events:
            print(f"{s.account}: {event}")
        if s.reconnects or s.duplicates or s.restarts:
            print(f"{s.account}: stream {s.stream}: {s.reconnects} reconnect{'' if s.reconnects == 1 else 's'}, "
                  f"{s.resent} frame{'' if s.resent == 1 else 's'} sent again, {s.duplicates} answered as already "
                  f"processed (not recorded again), {s.restarts} taken on by a worker without its state "
                  "(tracker_restart)")
    for s in stats:
        for message in s.error_messages:
            print(f"{s.account}: {message}", file=sys.stderr)
        if s.missing:
            print(f"{s.account}: {s.missing} of {s.frames_expected} frames got no reply", file=sys.stderr)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"url": o.url, "urls": list(o.urls), "form": o.form,
                                             "interval_ms": o.interval_ms, "resume": o.resume,
                                             "repeat": o.repeat, "accounts": [s.summary() for s in stats]},
                                            indent=2) + "\n")
    return 1 if any(s.missing or s.errors for s in stats) else 0


if __name__ == "__main__":
    sys.exit(main())
