"""Worker configuration: each option declared once (voicestream/options.py)."""
from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from voicestream.options import (
    COUNT,
    NON_NEGATIVE,
    PORT,
    POSITIVE_SECONDS,
    SECONDS,
    at_least,
    comma_list,
    option,
    optional,
    parse_config,
    switch,
)
from voicestream.worker_secret import ENVIRONMENT as SECRET_ENV
from voicestream.worker_secret import FLAG as SECRET_FLAG
from voicestream.worker_secret import parse_secret

ENCODERS = ("ecapa", "ge2e", "none")


def upper(text: str) -> str:
    return text.upper()


def probability(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a speech probability is in (0, 1], got {text!r}")
    return value


def milliseconds(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a duration in ms is 0 or more, got {text!r}")
    return value


def database_url(text: str) -> str:
    """Empty (embedded) or a checked postgresql:// URL. The check loads
    psycopg only when a URL is given: embedded workers never import it."""
    if not text.strip():
        return ""
    from .storage.postgres.url import parse_database_url
    return parse_database_url(text)


@dataclass(frozen=True)
class WorkerConfig:
    host: str = option("127.0.0.1", "--host", "WORKER_HOST",
                       "listen address (only the balancer faces clients)", group="network")
    port: int = option(7001, "--port", "WORKER_PORT", "listen port", parse=PORT, group="network")
    threads: int = option(32, "--threads", "WORKER_THREADS", "request threads of the one worker process",
                          parse=COUNT, group="network")
    worker_secret: str = option(
        "", SECRET_FLAG, SECRET_ENV,
        "secret every balancer sends (Authorization: Bearer); required on every route but /health and /metrics; "
        "needed to listen on anything but loopback; prefer the variable (ps shows flags)",
        parse=parse_secret, group="security")
    insecure: bool = switch("--insecure", "WORKER_INSECURE",
                            "listen on a non-loopback --host without a worker secret: anyone who reaches the port "
                            "can write frames and change voiceprints", group="security")
    log_dir: str = option("logs", "--log-dir", "LOG_DIR", "per-account frame logs", group="frames")
    # About a busy minute of the three workers of one host on one disk: each
    # ~2,400 frames/s (the capacity measured in README.md) of lines of up to
    # 73 bytes (10.5 MB a minute) and, with the database down, 170 bytes of
    # spool per row (measured: 100,000 rows, 16.7 MB; 24.5 MB a minute):
    # ~105 MB. Time to alert someone, and the host keeps room to work.
    min_free_mb: int = option(100, "--min-free-mb", "MIN_FREE_MB",
                              "free space (MB) the log directory (with --database also --spool-dir) must keep; "
                              "under it frames are refused (503) and /health says degraded until there is more; "
                              "0: until writes fail",
                              parse=NON_NEGATIVE, group="frames")
    # VAD defaults: VadParams' (worker/vad.py says why; docs/vad.md has the measurements).
    vad_threshold: float = option(0.3, "--vad-threshold", "VAD_THRESHOLD",
                                  "speech probability that turns voice on (off again under it minus 0.15)",
                                  parse=probability, group="frames")
    vad_min_silence_ms: int = option(0, "--vad-min-silence-ms", "VAD_MIN_SILENCE_MS",
                                     "silence (probability under threshold - 0.15) that turns voice off",
                                     parse=milliseconds, group="frames")
    vad_speech_pad_ms: int = option(0, "--vad-speech-pad-ms", "VAD_SPEECH_PAD_MS",
                                    "voice holds this long after speech ends", parse=milliseconds, group="frames")
    vad_min_speech_ms: int = option(0, "--vad-min-speech-ms", "VAD_MIN_SPEECH_MS",
                                    "speech turns voice on only once it has lasted this long (answers that much "
                                    "later)", parse=milliseconds, group="frames")
    max_frame_seconds: float = option(1.0, "--max-frame-seconds", "MAX_FRAME_SECONDS",
                                      "longest frame on /frames/batch", parse=POSITIVE_SECONDS, group="limits")
    max_body_bytes: int = option(1 << 20, "--max-body-bytes", "MAX_BODY_BYTES", "largest frame request body",
                                 parse=COUNT, group="limits")
    max_upload_bytes: int = option(16 << 20, "--max-upload-bytes", "MAX_UPLOAD_BYTES",
                                   "largest enroll / verify / embed body", parse=COUNT, group="limits")
    max_upload_seconds: float = option(120.0, "--max-upload-seconds", "MAX_UPLOAD_SECONDS",
                                       "longest WAV for enroll / verify / embed", parse=POSITIVE_SECONDS,
                                       group="limits")
    accepted_rates: tuple[int, ...] = option(
        (), "--accepted-rates", "ACCEPTED_RATES",
        "comma-separated sample rates accepted; rates other than 8000 and 16000 are resampled to 16000",
        parse=comma_list(int), shown_default="8000,11025,12000,16000,22050,24000,32000,44100,48000",
        group="limits")
    accepted_formats: tuple[str, ...] = option(
        (), "--accepted-formats", "ACCEPTED_FORMATS",
        "comma-separated WAV sample formats (soundfile subtypes; e.g. add ULAW,ALAW)",
        parse=comma_list(upper), shown_default="PCM_U8,PCM_16,PCM_24,PCM_32,FLOAT,DOUBLE", group="limits")
    graceful_timeout: float = option(10.0, "--graceful-timeout", "GRACEFUL_TIMEOUT",
                                     "seconds to finish in-flight frames on SIGTERM", parse=SECONDS, group="network")
    encoder: str = option("ecapa", "--encoder", "SPEAKER_ENCODER",
                          "speaker encoder: ecapa, ge2e or none (VAD only)", choices=ENCODERS, group="speakers")
    ecapa_source: str = option("speechbrain/spkrec-ecapa-voxceleb", "--ecapa-source", "ECAPA_SOURCE",
                               "hub id or local directory of the ECAPA model", group="speakers")
    model_dir: str = option("models", "--model-dir", "MODEL_DIR",
                            "downloaded models and exported ONNX graphs (<model-dir>/onnx)", group="speakers")
    store_path: str = option("voiceprints.db", "--store", "VOICEPRINT_DB",
                             "SQLite voiceprint store shared by all workers", group="speakers")
    activity_log: str = option("logs/activity.log", "--activity-log", "ACTIVITY_LOG",
                               "enrollments, deletions and verifications (JSON lines)", group="speakers")
    min_enroll_seconds: float = option(3.0, "--min-enroll-seconds", "MIN_ENROLL_SECONDS",
                                       "least speech an enrollment needs", parse=SECONDS, group="speakers")
    speaker_lag_ms: int = option(
        1000, "--speaker-lag-ms", "SPEAKER_LAG_MS",
        "how long after a frame its final speaker label comes (a segment event; up to 100: final = immediate)",
        parse=at_least(0, int, 1000), group="speakers")
    speaker_threshold: float | None = option(
        None, "--speaker-threshold", "SPEAKER_THRESHOLD",
        "score a speaker must pass (a cosine, -1 to 1): a 1 s window's in streams, a recording's in /verify",
        parse=optional(at_least(-1, high=1)),
        shown_default="per encoder: GE2E 0.685 in streams, 0.70 in /verify; ECAPA 0.25", group="speakers")
    database: str = option(
        "", "--database", "DATABASE_URL",
        "PostgreSQL URL (postgresql://user@host:port/db) shared by every host: voiceprints, the activity log, "
        "every frame's result and every segment live there; empty: this host's SQLite store and log files",
        parse=database_url,
        group="database")
    spool_dir: str = option("spool", "--spool-dir", "SPOOL_DIR",
                            "where frame results wait, on this host's disk, while the database is unreachable",
                            group="database")
    spool_max_rows: int = option(2_000_000, "--spool-max-rows", "SPOOL_MAX_ROWS",
                                 "most frame results (and, apart, most segments) the spool holds; past it new "
                                 "ones are dropped and counted",
                                 parse=COUNT, group="database")
    database_timeout: float = option(0.5, "--database-timeout", "DATABASE_TIMEOUT",
                                     "seconds a frame batch waits for the database before its results are spooled",
                                     parse=POSITIVE_SECONDS, group="database")
    # Not an option: how long an account's streaming state outlives its last frame.
    account_idle_seconds: float = 300.0


def is_loopback(host: str) -> bool:
    """Whether host (a --host value) is reachable only from this machine: localhost, 127.0.0.0/8, ::1."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name, or empty (every address)
        return False


def exposure(config: WorkerConfig) -> str | None:
    """Why this worker must not start (a non-loopback --host and no secret,
    not overridden by --insecure), as one line; None when it may."""
    if config.worker_secret or config.insecure or is_loopback(config.host):
        return None
    return (f"refusing to listen on {config.host or 'every address'} without a worker secret: anyone who reaches "
            f"port {config.port} could write frames into any account's log and delete its voiceprints; give every "
            f"worker and balancer the same {SECRET_ENV} (or {SECRET_FLAG}), or pass "
            "--insecure (WORKER_INSECURE=1) to run open on purpose")


def insecure_warning(config: WorkerConfig) -> str | None:
    """The warning of a worker that --insecure lets listen beyond loopback without a secret."""
    if not config.insecure or config.worker_secret or is_loopback(config.host):
        return None
    return (f"WARNING: listening on {config.host or 'every address'}:{config.port} without a worker secret "
            "(--insecure): anyone who reaches this port can write frames and change voiceprints")


def parse_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> WorkerConfig:
    return parse_config(WorkerConfig, argv, "python -m worker",
                        "Voice stream worker: streaming VAD and speaker verification per account.", environ)
