"""Assemble speaker verification for one worker process from its config."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from flask import Blueprint

from ..config import WorkerConfig
from ..vad import VadEngine
from .activity import ActivityLog
from .encoders import DEFAULT_THRESHOLDS
from .engine import SpeakerEngine
from .onnx_encoders import load_onnx_encoder
from .routes import create_blueprint
from .service import SpeakerService
from .store import VoiceprintStore
from .tracker import Roster, SpeakerTracker


@dataclass
class Speakers:
    service: SpeakerService
    blueprint: Blueprint
    tracker: SpeakerTracker | None  # None: --encoder none, frames pay nothing
    engine: SpeakerEngine | None


def create_speakers(config: WorkerConfig, vad: VadEngine) -> Speakers:
    if config.encoder == "none":
        service = SpeakerService(None, None, vad, None, 0.0, config.min_enroll_seconds)
        return Speakers(service, blueprint(service, config), None, None)
    threshold = (config.speaker_threshold if config.speaker_threshold is not None
                 else DEFAULT_THRESHOLDS[config.encoder])
    # ONNX graphs: torch never enters a worker process (export.py runs in a
    # subprocess when a graph is missing).
    engine = SpeakerEngine(config.encoder, partial(load_onnx_encoder, config.encoder, config.ecapa_source,
                                                   config.model_dir))
    store = VoiceprintStore(config.store_path)
    service = SpeakerService(engine, store, vad, ActivityLog(config.activity_log, config.port),
                             threshold, config.min_enroll_seconds)
    tracker = SpeakerTracker(engine, Roster(store), threshold, config.window_seconds, config.hop_seconds,
                             config.speaker_reset_seconds)
    return Speakers(service, blueprint(service, config), tracker, engine)


def blueprint(service: SpeakerService, config: WorkerConfig) -> Blueprint:
    return create_blueprint(service, config.max_upload_seconds, config.max_upload_bytes)
