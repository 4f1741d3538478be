"""The Worker: what one worker process shares between its request threads,
built once from the config; the routes reach it with current_worker()."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import partial
from typing import cast

from flask import current_app

from .accounts import Accounts
from .config import WorkerConfig
from .framelog import FrameLog
from .pipeline import FramePipeline
from .speakers.encoders import DEFAULT_THRESHOLDS
from .speakers.engine import SpeakerEngine
from .speakers.loader import load_onnx_encoder
from .speakers.service import ActivityLog, SpeakerService
from .speakers.store import VoiceprintStore
from .speakers.tracker import Roster, SpeakerTracker
from .vad import SileroOnnx, VadEngine, VadParams

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


def current_worker() -> Worker:
    """The Worker of the app handling the current request."""
    return cast(Worker, current_app.extensions[EXTENSION])


def create_worker(config: WorkerConfig) -> Worker:
    vad = VadEngine(SileroOnnx(), VadParams(config.vad_threshold, config.vad_min_silence_ms))
    speakers, tracker = create_speakers(config, vad)
    pipeline = FramePipeline(config.port, vad, FrameLog(config.log_dir), Accounts(config.account_idle_seconds),
                             tracker)
    return Worker(config, pipeline, speakers)


def create_speakers(config: WorkerConfig, vad: VadEngine) -> tuple[SpeakerService, SpeakerTracker | None]:
    """The speaker API's service and the frames' tracker; no tracker with
    --encoder none, so frames pay nothing for speakers."""
    if config.encoder == "none":
        return SpeakerService(None, None, vad, None, 0.0, config.min_enroll_seconds), None
    threshold = (config.speaker_threshold if config.speaker_threshold is not None
                 else DEFAULT_THRESHOLDS[config.encoder])
    # ONNX graphs: torch never enters a worker process (the export, when a
    # graph is missing, runs in a subprocess).
    engine = SpeakerEngine(config.encoder, partial(load_onnx_encoder, config.encoder, config.ecapa_source,
                                                   config.model_dir))
    store = VoiceprintStore(config.store_path)
    service = SpeakerService(engine, store, vad, ActivityLog(config.activity_log, config.port),
                             threshold, config.min_enroll_seconds)
    tracker = SpeakerTracker(engine, Roster(store), threshold, config.window_seconds, config.hop_seconds,
                             config.speaker_reset_seconds)
    return service, tracker
