"""The worker's Flask application (application factory)."""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from .accountcode import is_valid_account
from .accounts import Accounts
from .audio import AudioError, decode_wav
from .config import WorkerConfig
from .framelog import FrameLog, parse_frame_time
from .pipeline import FramePipeline
from .speakers.factory import Speakers, create_speakers
from .vad import SileroOnnx, VadEngine, VadParams


@dataclass
class Worker:
    """Everything one worker process shares between its request threads."""
    config: WorkerConfig
    pipeline: FramePipeline
    vad: VadEngine
    # Set on SIGTERM (see __main__): /health answers 503 and new frames are
    # refused with 503, so the balancer sends them elsewhere while the frames
    # already here finish.
    draining: threading.Event = field(default_factory=threading.Event)
    speakers: Speakers | None = None  # speaker verification (worker/speakers)


def create_worker(config: WorkerConfig) -> Worker:
    vad = VadEngine(SileroOnnx(), VadParams(config.vad_threshold, config.vad_min_silence_ms))
    speakers = create_speakers(config, vad)
    pipeline = FramePipeline(config.port, vad, FrameLog(config.log_dir), Accounts(config.account_idle_seconds),
                             speakers.tracker)
    return Worker(config, pipeline, vad, speakers=speakers)


def create_app(config: WorkerConfig | None = None) -> Flask:
    config = config or WorkerConfig()
    worker = create_worker(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions["voice_worker"] = worker
    app.register_blueprint(worker.speakers.blueprint)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=exc.description), exc.code

    @app.get("/health")
    def health():
        if worker.draining.is_set():
            return jsonify(status="draining", port=config.port), 503
        return jsonify(status="ok", port=config.port, accounts=len(worker.pipeline.accounts),
                       speakers=worker.speakers.service.status(),
                       # Speakers run on onnxruntime: torch here would cost ~480 MB.
                       torch_loaded="torch" in sys.modules)

    @app.post("/frames")
    def frames():
        if worker.draining.is_set():
            return error(503, "worker is shutting down: send the frame to another worker")
        account = request.headers.get("X-Account") or request.args.get("account", "")
        if not is_valid_account(account):
            return error(400, "account code must be 1-64 characters of A-Z a-z 0-9 _ -")
        stream = request.headers.get("X-Stream", "")
        seq_text = request.headers.get("X-Seq") or request.args.get("seq")
        if seq_text is not None and not (seq_text.isascii() and seq_text.isdigit() and len(seq_text) <= 18):
            return error(400, "seq must be a non-negative integer")
        stamp_text = request.headers.get("X-Frame-Time")
        try:
            stamp = parse_frame_time(stamp_text) if stamp_text else None
        except ValueError as exc:
            return error(400, str(exc))
        try:
            audio = decode_wav(request.get_data(cache=False), max_seconds=config.max_frame_seconds,
                               accepted_rates=config.accepted_rates or None,
                               accepted_subtypes=frozenset(config.accepted_formats) or None)
        except AudioError as exc:
            return error(400, str(exc))
        reply = worker.pipeline.process(account, audio, stream, int(seq_text) if seq_text else None, stamp)
        return jsonify(reply), (409 if "error" in reply else 200)

    return app


def error(status: int, message: str):
    return jsonify(error=message), status
