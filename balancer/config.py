"""Balancer configuration: command-line flags with environment-variable defaults."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

DEFAULT_WORKERS = ("http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003")


@dataclass(frozen=True)
class BalancerConfig:
    host: str = "0.0.0.0"
    port: int = 6001
    workers: tuple[str, ...] = DEFAULT_WORKERS
    max_message_bytes: int = 1 << 20
    max_upload_bytes: int = 16 << 20
    max_connections: int = 1000
    max_account_length: int = 64
    max_frame_seconds: float = 1.0
    forward_timeout: float = 5.0
    max_inflight_per_worker: int = 1
    health_interval: float = 1.0
    health_timeout: float = 2.0
    token: str = ""
    shutdown_timeout: float = 10.0


def _workers(text: str) -> tuple[str, ...]:
    workers = tuple(w.strip().rstrip("/") for w in text.split(",") if w.strip())
    if not workers:
        raise argparse.ArgumentTypeError("at least one worker URL is needed")
    return workers


def parse_args(argv: list[str] | None = None) -> BalancerConfig:
    d = BalancerConfig()
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m balancer", description="Voice stream balancer.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default=env("BALANCER_HOST", d.host), help="listen address [BALANCER_HOST]")
    p.add_argument("--port", type=int, default=int(env("BALANCER_PORT", d.port)), help="listen port [BALANCER_PORT]")
    p.add_argument("--workers", type=_workers, default=_workers(env("WORKERS", ",".join(d.workers))),
                   help="comma-separated worker URLs; every replica must list the same URLs [WORKERS]")
    p.add_argument("--max-message-bytes", type=int, default=int(env("MAX_MESSAGE_BYTES", d.max_message_bytes)),
                   help="largest WebSocket message or HTTP ingest body; over it: an error reply / 413 [MAX_MESSAGE_BYTES]")
    p.add_argument("--max-upload-bytes", type=int, default=int(env("MAX_UPLOAD_BYTES", d.max_upload_bytes)),
                   help="largest body of a REST call (/accounts/..., /embed, /compare): speaker enrollment "
                        "uploads are larger than frames [MAX_UPLOAD_BYTES]")
    p.add_argument("--max-connections", type=int, default=int(env("MAX_CONNECTIONS", d.max_connections)),
                   help="concurrent WebSocket connections plus HTTP requests in progress (/health excluded); "
                        "more get 429 [MAX_CONNECTIONS]")
    p.add_argument("--max-account-length", type=int, default=int(env("MAX_ACCOUNT_LENGTH", d.max_account_length)),
                   help="longest ACCOUNTCODE, at most 64 [MAX_ACCOUNT_LENGTH]")
    p.add_argument("--max-frame-seconds", type=float, default=float(env("MAX_FRAME_SECONDS", d.max_frame_seconds)),
                   help="longest frame in an ingest request [MAX_FRAME_SECONDS]")
    p.add_argument("--max-inflight-per-worker", type=int,
                   default=int(env("MAX_INFLIGHT_PER_WORKER", d.max_inflight_per_worker)),
                   help="requests open to one worker at once; frames that arrive meanwhile are sent "
                        "together in the next [MAX_INFLIGHT_PER_WORKER]")
    p.add_argument("--forward-timeout", type=float, default=float(env("FORWARD_TIMEOUT", d.forward_timeout)),
                   help="seconds to wait for a worker before trying the next [FORWARD_TIMEOUT]")
    p.add_argument("--health-interval", type=float, default=float(env("HEALTH_INTERVAL", d.health_interval)),
                   help="seconds between worker health checks [HEALTH_INTERVAL]")
    p.add_argument("--health-timeout", type=float, default=float(env("HEALTH_TIMEOUT", d.health_timeout)),
                   help="seconds a worker's /health may take; two timeouts in a row take the worker out of "
                        "the ring (a refused connection or non-200 answer at once) [HEALTH_TIMEOUT]")
    p.add_argument("--token", default=env("AUTH_TOKEN", d.token),
                   help="when set, clients must send it as 'Authorization: Bearer' or ?token= [AUTH_TOKEN]")
    p.add_argument("--shutdown-timeout", type=float, default=float(env("SHUTDOWN_TIMEOUT", d.shutdown_timeout)),
                   help="seconds to finish in-flight frames on SIGTERM [SHUTDOWN_TIMEOUT]")
    a = p.parse_args(argv)
    return BalancerConfig(**vars(a))
