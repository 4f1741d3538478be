"""The Worker: what one worker process shares between its request threads,
built once from the config; the routes reach it with current_worker()."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from flask import current_app

from .accounts import Accounts
from .config import WorkerConfig
from .framelog import FrameLog
from .pipeline import FramePipeline
from .speakers.encoders import DEFAULT_THRESHOLDS
from .speakers.engine import SpeakerEngine
from .speakers.loader import load_onnx_encoder
from .speakers.scoring import Roster
from .speakers.service import ActivityLog, ActivityWriter, SpeakerService
from .speakers.store import Voiceprints, VoiceprintStore
from .speakers.tracker import SpeakerTracker
from .vad import SileroOnnx, VadEngine, VadParams

if TYPE_CHECKING:
    from .database.shared import SharedDatabase

# The key of app.extensions that holds the Worker (__main__.py reads it too).
EXTENSION = "voice_worker"


@dataclass
class Worker:
    config: WorkerConfig
    pipeline: FramePipeline
    speakers: SpeakerService
    # Set on SIGTERM (see __main__): /health answers 503 and new frames are
    # refused with 503, so the balancer sends them elsewhere while the frames
    # already here finish.
    draining: threading.Event = field(default_factory=threading.Event)
    shared: SharedDatabase | None = None  # --database: PostgreSQL shared by every host

    def database_health(self) -> dict[str, Any]:
        """/health's "database": the shared store's state, or embedded."""
        return self.shared.health() if self.shared is not None else {"mode": "embedded"}


def current_worker() -> Worker:
    """The Worker of the app handling the current request."""
    return cast(Worker, current_app.extensions[EXTENSION])


def create_worker(config: WorkerConfig) -> Worker:
    shared = open_shared_database(config) if config.database else None
    vad = VadEngine(SileroOnnx(), VadParams.from_config(config))
    speakers, tracker = create_speakers(config, vad, shared)
    pipeline = FramePipeline(config.port, vad, FrameLog(config.log_dir), Accounts(config.account_idle_seconds),
                             tracker, shared.frames if shared is not None else None)
    return Worker(config, pipeline, speakers, shared=shared)


def open_shared_database(config: WorkerConfig) -> SharedDatabase:
    """The PostgreSQL store of --database. Imported here: a worker without
    --database never loads psycopg. An unreachable database does not stop the
    worker (its frame rows spool on this host until the database is back)."""
    from .database.shared import SharedDatabase
    return SharedDatabase.open(config.database, timeout=config.database_timeout, spool_dir=config.spool_dir,
                               spool_max_rows=config.spool_max_rows, host=config.host, port=config.port)


def create_speakers(config: WorkerConfig, vad: VadEngine,
                    shared: SharedDatabase | None = None) -> tuple[SpeakerService, SpeakerTracker | None]:
    """The speaker API's service and the frames' tracker; no tracker with
    --encoder none, so frames pay nothing for speakers. Voiceprints and the
    activity log live in the shared database when there is one."""
    if config.encoder == "none":
        return SpeakerService(None, None, vad, None, 0.0, config.min_enroll_seconds), None
    threshold = (config.speaker_threshold if config.speaker_threshold is not None
                 else DEFAULT_THRESHOLDS[config.encoder])
    # ONNX graphs: torch never enters a worker process (the export, when a
    # graph is missing, runs in a subprocess).
    engine = SpeakerEngine(config.encoder, partial(load_onnx_encoder, config.encoder, config.ecapa_source,
                                                   config.model_dir))
    store: Voiceprints
    activity: ActivityWriter
    if shared is not None:
        store, activity = shared.voiceprints, shared.activity
    else:
        store, activity = VoiceprintStore(config.store_path), ActivityLog(config.activity_log, config.port)
    service = SpeakerService(engine, store, vad, activity, threshold, config.min_enroll_seconds)
    tracker = SpeakerTracker(engine, Roster(store), threshold, config.window_seconds, config.hop_seconds,
                             config.speaker_reset_seconds, config.first_decision_seconds)
    return service, tracker
