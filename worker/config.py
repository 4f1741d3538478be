"""Worker configuration: command-line flags with environment-variable defaults."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class WorkerConfig:
    host: str = "127.0.0.1"
    port: int = 7001
    threads: int = 32
    log_dir: str = "logs"
    vad_threshold: float = 0.5
    vad_min_silence_ms: int = 100
    max_frame_seconds: float = 1.0
    max_body_bytes: int = 1 << 20
    max_upload_seconds: float = 120.0
    max_upload_bytes: int = 16 << 20  # speaker REST bodies (enrollment WAVs), as the balancer's
    accepted_rates: tuple[int, ...] = ()  # empty: audio.COMMON_RATES (all resampled to 8 or 16 kHz)
    accepted_formats: tuple[str, ...] = ()  # soundfile subtypes; empty: audio.ACCEPTED_SUBTYPES
    account_idle_seconds: float = 300.0
    # Speaker verification (see worker/speakers).
    encoder: str = "ecapa"  # ecapa | ge2e | none
    ecapa_source: str = "speechbrain/spkrec-ecapa-voxceleb"
    model_dir: str = "models"
    store_path: str = "voiceprints.db"
    activity_log: str = "logs/activity.log"
    min_enroll_seconds: float = 3.0
    window_seconds: float = 2.0
    hop_seconds: float = 0.5
    speaker_reset_seconds: float = 3.0  # unvoiced time that ends a turn; 0: never
    speaker_threshold: float | None = None  # None: the encoder's calibrated default
    graceful_timeout: float = 10.0
    extra: dict = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> WorkerConfig:
    d = WorkerConfig()
    p = argparse.ArgumentParser(prog="python -m worker", description="Voice stream worker (VAD + speaker verification).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default=_env("WORKER_HOST", d.host), help="listen address [WORKER_HOST]")
    p.add_argument("--port", type=int, default=int(_env("WORKER_PORT", str(d.port))), help="listen port [WORKER_PORT]")
    p.add_argument("--threads", type=int, default=int(_env("WORKER_THREADS", str(d.threads))),
                   help="request threads in the single worker process [WORKER_THREADS]")
    p.add_argument("--log-dir", default=_env("LOG_DIR", d.log_dir), help="per-account frame logs [LOG_DIR]")
    p.add_argument("--vad-threshold", type=float, default=float(_env("VAD_THRESHOLD", str(d.vad_threshold))),
                   help="speech probability that turns voice on [VAD_THRESHOLD]")
    p.add_argument("--vad-min-silence-ms", type=int, default=int(_env("VAD_MIN_SILENCE_MS", str(d.vad_min_silence_ms))),
                   help="silence that turns voice off [VAD_MIN_SILENCE_MS]")
    p.add_argument("--max-frame-seconds", type=float, default=float(_env("MAX_FRAME_SECONDS", str(d.max_frame_seconds))),
                   help="longest frame accepted on /frames [MAX_FRAME_SECONDS]")
    p.add_argument("--max-body-bytes", type=int, default=int(_env("MAX_BODY_BYTES", str(d.max_body_bytes))),
                   help="largest request body [MAX_BODY_BYTES]")
    p.add_argument("--max-upload-bytes", type=int, default=int(_env("MAX_UPLOAD_BYTES", str(d.max_upload_bytes))),
                   help="largest body of a speaker REST call (enroll/verify/embed WAVs) [MAX_UPLOAD_BYTES]")
    p.add_argument("--max-upload-seconds", type=float, default=float(_env("MAX_UPLOAD_SECONDS", str(d.max_upload_seconds))),
                   help="longest WAV for enroll/verify/embed [MAX_UPLOAD_SECONDS]")
    p.add_argument("--accepted-rates", default=_env("ACCEPTED_RATES", ""),
                   help="comma-separated sample rates accepted; empty: 8000,11025,12000,16000,22050,24000,32000,44100,48000 "
                        "(rates other than 8000/16000 are resampled to 16000) [ACCEPTED_RATES]")
    p.add_argument("--accepted-formats", default=_env("ACCEPTED_FORMATS", ""),
                   help="comma-separated WAV sample formats (soundfile subtypes, e.g. PCM_16,FLOAT,ULAW); "
                        "empty: PCM_U8,PCM_16,PCM_24,PCM_32,FLOAT,DOUBLE [ACCEPTED_FORMATS]")
    p.add_argument("--encoder", choices=("ecapa", "ge2e", "none"), default=_env("SPEAKER_ENCODER", d.encoder),
                   help="speaker encoder [SPEAKER_ENCODER]")
    p.add_argument("--ecapa-source", default=_env("ECAPA_SOURCE", d.ecapa_source),
                   help="hub id or local directory of the ECAPA model [ECAPA_SOURCE]")
    p.add_argument("--model-dir", default=_env("MODEL_DIR", d.model_dir), help="where hub models are cached [MODEL_DIR]")
    p.add_argument("--store", dest="store_path", default=_env("VOICEPRINT_DB", d.store_path),
                   help="SQLite voiceprint store shared by all workers [VOICEPRINT_DB]")
    p.add_argument("--activity-log", default=_env("ACTIVITY_LOG", d.activity_log),
                   help="enrollment/verification activity log [ACTIVITY_LOG]")
    p.add_argument("--min-enroll-seconds", type=float, default=float(_env("MIN_ENROLL_SECONDS", str(d.min_enroll_seconds))),
                   help="least speech an enrollment needs [MIN_ENROLL_SECONDS]")
    p.add_argument("--window-seconds", type=float, default=float(_env("SPEAKER_WINDOW_SECONDS", str(d.window_seconds))),
                   help="voiced audio scored per streaming decision [SPEAKER_WINDOW_SECONDS]")
    p.add_argument("--hop-seconds", type=float, default=float(_env("SPEAKER_HOP_SECONDS", str(d.hop_seconds))),
                   help="new speech between streaming decisions [SPEAKER_HOP_SECONDS]")
    p.add_argument("--speaker-reset-seconds", type=float,
                   default=float(_env("SPEAKER_RESET_SECONDS", str(d.speaker_reset_seconds))),
                   help="unvoiced seconds after which an account's speech window and decision are dropped, "
                        "so the next speaker starts clean; 0 never drops them [SPEAKER_RESET_SECONDS]")
    threshold = _env("SPEAKER_THRESHOLD", "")
    p.add_argument("--speaker-threshold", type=float, default=float(threshold) if threshold else None,
                   help="score a speaker must pass; default: the encoder's calibrated value [SPEAKER_THRESHOLD]")
    p.add_argument("--graceful-timeout", type=float, default=float(_env("GRACEFUL_TIMEOUT", str(d.graceful_timeout))),
                   help="seconds to finish in-flight frames on SIGTERM [GRACEFUL_TIMEOUT]")
    a = p.parse_args(argv)
    try:
        rates = tuple(int(r) for r in a.accepted_rates.split(",") if r.strip())
    except ValueError:
        p.error(f"--accepted-rates must be comma-separated integers, got {a.accepted_rates!r}")
    formats = tuple(f.strip().upper() for f in a.accepted_formats.split(",") if f.strip())
    values = {k: v for k, v in vars(a).items() if k not in ("accepted_rates", "accepted_formats")}
    return WorkerConfig(accepted_rates=rates, accepted_formats=formats, **values)
