"""Balancer configuration: each option declared once (voicestream/options.py)."""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from voicestream.accounts import MAX_ACCOUNT_LENGTH
from voicestream.options import COUNT, NON_NEGATIVE, PORT, POSITIVE_SECONDS, SECONDS, option, parse_config
from voicestream.worker_secret import ENVIRONMENT as SECRET_ENV
from voicestream.worker_secret import FLAG as SECRET_FLAG
from voicestream.worker_secret import parse_secret

EVENT_LOOPS = ("uvloop", "asyncio")
DEFAULT_WORKERS = ("http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003")


def worker_urls(text: str) -> tuple[str, ...]:
    workers = tuple(w.strip().rstrip("/") for w in text.split(",") if w.strip())
    if not workers:
        raise argparse.ArgumentTypeError("at least one worker URL is needed")
    bad = [w for w in workers if not w.startswith(("http://", "https://"))]
    if bad:
        raise argparse.ArgumentTypeError(f"worker URLs start with http:// or https://, got {bad[0]!r}")
    return workers


def account_length(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_ACCOUNT_LENGTH:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_ACCOUNT_LENGTH}")
    return value


def gap_ms(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be 0 to 1000 ms")
    return value


@dataclass(frozen=True)
class BalancerConfig:
    host: str = option("0.0.0.0", "--host", "BALANCER_HOST", "listen address", group="network")
    port: int = option(6001, "--port", "BALANCER_PORT", "listen port", parse=PORT, group="network")
    workers: tuple[str, ...] = option(
        DEFAULT_WORKERS, "--workers", "WORKERS",
        "comma-separated worker URLs; every balancer replica must list the same URLs",
        parse=worker_urls, shown_default="http://127.0.0.1:7001,...:7002,...:7003", group="network")
    max_message_bytes: int = option(
        1 << 20, "--max-message-bytes", "MAX_MESSAGE_BYTES",
        "largest WebSocket message or HTTP ingest body; over it: an error reply / 413", parse=COUNT, group="limits")
    max_upload_bytes: int = option(
        16 << 20, "--max-upload-bytes", "MAX_UPLOAD_BYTES",
        "largest REST body (/accounts/..., /embed, /compare): enrollment uploads are larger than frames",
        parse=COUNT, group="limits")
    max_connections: int = option(
        1000, "--max-connections", "MAX_CONNECTIONS",
        "open WebSockets plus HTTP requests in progress (/health excluded); more get 429", parse=COUNT,
        group="limits")
    max_connections_per_address: int = option(
        0, "--max-connections-per-address", "MAX_CONNECTIONS_PER_ADDRESS",
        "of those, at most this many from one address (more get 429); 0: no limit. Behind a proxy, all share "
        "its address", parse=NON_NEGATIVE, group="limits")
    # 20 s: a 100 ms frame is 1.7-4.3 KB (8 kHz PCM to 16 kHz base64 JSON), under 2 s at 2G's 20 kbit/s; TCP's
    # retransmissions after four losses in a row (1+2+4+8 s) still end inside it. A phone whose network is gone
    # for longer has lost its connection anyway, and resumes its stream on a new one.
    message_timeout: float = option(
        20.0, "--message-timeout", "MESSAGE_TIMEOUT",
        "seconds a WebSocket message may take from its first byte to its last (a packet: from its text part "
        "to the end of its binary part); then the connection closes with 4008", parse=POSITIVE_SECONDS,
        group="limits")
    # 60 s: a client streams a frame every 100 ms, and the browser console's socket lives while it streams;
    # 60 s without a message is a call that ended or a network that is gone. aiohttp's heartbeat (a ping after
    # 30 s without data, 15 s for the pong) finds a dead peer sooner, but not a live one that sends nothing.
    idle_timeout: float = option(
        60.0, "--idle-timeout", "IDLE_TIMEOUT",
        "seconds a WebSocket may wait for the first byte of its client's next message; then it closes with 4000",
        parse=POSITIVE_SECONDS, group="limits")
    max_account_length: int = option(MAX_ACCOUNT_LENGTH, "--max-account-length", "MAX_ACCOUNT_LENGTH",
                                     f"longest ACCOUNTCODE, at most {MAX_ACCOUNT_LENGTH}", parse=account_length,
                                     group="limits")
    max_frame_seconds: float = option(1.0, "--max-frame-seconds", "MAX_FRAME_SECONDS",
                                      "longest frame in an HTTP ingest request", parse=POSITIVE_SECONDS, group="limits")
    forward_timeout: float = option(5.0, "--forward-timeout", "FORWARD_TIMEOUT",
                                    "seconds to wait for a worker before trying the next", parse=POSITIVE_SECONDS,
                                    group="workers")
    max_inflight_per_worker: int = option(
        1, "--max-inflight-per-worker", "MAX_INFLIGHT_PER_WORKER",
        "requests open to one worker at once; frames arriving meanwhile are sent together in the next",
        parse=COUNT, group="workers")
    # 20 ms: VAD, 2 workers, 200 streams: 0.39-0.41 ms of CPU per frame against 0.54-0.60 without
    # (10 ms: 0.41-0.51), p99 +0-10 ms; 400 streams: 0.30 (10 ms: 0.34, 30 ms: 0.31). docs/performance.md
    batch_gap_ms: float = option(
        20.0, "--batch-gap-ms", "BATCH_GAP_MS",
        "after a request that carried several frames, the next to that worker starts this much later at the "
        "earliest, so more frames share it; 0: none", parse=gap_ms, group="workers")
    health_interval: float = option(1.0, "--health-interval", "HEALTH_INTERVAL",
                                    "seconds between worker health checks", parse=POSITIVE_SECONDS, group="workers")
    health_timeout: float = option(
        2.0, "--health-timeout", "HEALTH_TIMEOUT",
        "seconds a worker's /health may take; two timeouts in a row take it out of the ring "
        "(a refused connection or another answer at once)", parse=POSITIVE_SECONDS, group="workers")
    token: str = option("", "--token", "AUTH_TOKEN",
                        "when set, every client must send it as 'Authorization: Bearer <token>' or ?token=",
                        group="security")
    worker_secret: str = option(
        "", SECRET_FLAG, SECRET_ENV,
        "secret sent to every worker (Authorization: Bearer), the same as the workers'; never a client's "
        "token; prefer the variable (ps shows flags)", parse=parse_secret, group="security")
    # uvloop (libuv) against asyncio's own loop, 100 streams, alternating: a least aiohttp WebSocket
    # server (receive a frame's text and binary messages, send a JSON reply) 0.16 ms of CPU per frame
    # against 0.25-0.28, more than silero's floor; the balancer 0.31-0.38 against 0.43-0.44
    # (docs/performance.md, "The balancer's event loop").
    event_loop: str = option("uvloop", "--event-loop", "EVENT_LOOP",
                             "uvloop (libuv, the cheaper per message) or asyncio (the standard library's)",
                             choices=EVENT_LOOPS, group="general")
    shutdown_timeout: float = option(10.0, "--shutdown-timeout", "SHUTDOWN_TIMEOUT",
                                     "seconds to finish in-flight frames on SIGTERM", parse=SECONDS, group="general")


def parse_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> BalancerConfig:
    return parse_config(BalancerConfig, argv, "python -m balancer",
                        "Voice stream balancer: WebSocket and HTTP ingest of frames, routed to workers.", environ)
