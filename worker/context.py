"""The Worker: what one worker process shares between its request threads,
built once from the config (create_worker); the routes reach it with
worker/routes' current_worker()."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .accounts import Accounts
from .config import WorkerConfig
from .pipeline import FramePipeline
from .speakers.encoders import DEFAULT_THRESHOLDS
from .speakers.engine import SpeakerEngine
from .speakers.loader import load_onnx_encoder
from .speakers.scoring import Roster
from .speakers.service import SpeakerService
from .speakers.tracker import SpeakerTracker
from .storage.embedded import EmbeddedStorage
from .storage.framelog import FrameLog
from .storage.guard import MB, DiskGuard
from .storage.protocol import Storage
from .vad import SileroOnnx, VadEngine, VadParams

# The key of app.extensions that holds the Worker (__main__.py reads it too).
EXTENSION = "voice_worker"


@dataclass
class Worker:
    config: WorkerConfig
    pipeline: FramePipeline
    speakers: SpeakerService
    storage: Storage  # embedded (this host's files) or shared (--database: PostgreSQL)
    # Set on SIGTERM (see __main__): /health answers 503 and new frames are
    # refused with 503, so the balancer sends them elsewhere while the frames
    # already here finish.
    draining: threading.Event = field(default_factory=threading.Event)

    def database_health(self) -> dict[str, Any]:
        """/health's "database": the shared store's state, or embedded."""
        return self.storage.health()


def create_worker(config: WorkerConfig) -> Worker:
    storage = open_storage(config)
    vad = VadEngine(SileroOnnx(), VadParams.from_config(config))
    speakers, tracker = create_speakers(config, vad, storage)
    guard = DiskGuard.of_log_dir(config.log_dir, config.min_free_mb * MB,
                                 spool_dir=config.spool_dir if config.database else None)
    pipeline = FramePipeline(config.port, vad, FrameLog(config.log_dir), Accounts(config.account_idle_seconds),
                             tracker, storage.frames, guard=guard)
    return Worker(config, pipeline, speakers, storage)


def open_storage(config: WorkerConfig) -> Storage:
    """The one choice of backend: PostgreSQL shared by every host (--database)
    or this host's files. The shared one is imported here: a worker without
    --database never loads psycopg. An unreachable database does not stop the
    worker (its frame rows spool on this host until the database is back)."""
    if config.database:
        from .storage.postgres.shared import SharedDatabase
        return SharedDatabase.open(config.database, timeout=config.database_timeout, spool_dir=config.spool_dir,
                                   spool_max_rows=config.spool_max_rows, host=config.host, port=config.port)
    return EmbeddedStorage(config.store_path, config.activity_log, config.port, config.log_dir)


def create_speakers(config: WorkerConfig, vad: VadEngine,
                    storage: Storage) -> tuple[SpeakerService, SpeakerTracker | None]:
    """The speaker API's service and the frames' tracker; no tracker with
    --encoder none, so frames pay nothing for speakers (and no voiceprint
    store or activity log is opened)."""
    if config.encoder == "none":
        return SpeakerService(None, None, vad, None, 0.0, config.min_enroll_seconds), None
    threshold = (config.speaker_threshold if config.speaker_threshold is not None
                 else DEFAULT_THRESHOLDS[config.encoder])
    # ONNX graphs: torch never enters a worker process (the export, when a
    # graph is missing, runs in a subprocess).
    engine = SpeakerEngine(config.encoder, partial(load_onnx_encoder, config.encoder, config.ecapa_source,
                                                   config.model_dir))
    store = storage.voiceprints
    service = SpeakerService(engine, store, vad, storage.activity, threshold, config.min_enroll_seconds)
    # The tracker's own default threshold is for 1 s windows (encoders.SCORE_MODELS).
    tracker = SpeakerTracker(engine, Roster(store), config.speaker_threshold, config.speaker_lag_ms / 1000)
    return service, tracker
