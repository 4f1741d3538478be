"""The worker's Flask application (application factory)."""
from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field

from voicestream.accounts import is_valid_account
from voicestream.batch import BatchError, decode_batch
from voicestream.stamps import parse_stamp

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from .accounts import Accounts
from .audio import AudioError, decode_wav
from .config import WorkerConfig
from .framelog import FrameLog
from .pipeline import Frame, FramePipeline
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
                       frames=worker.pipeline.frames, batches=worker.pipeline.batches,
                       speakers=worker.speakers.service.status(),
                       # Speakers run on onnxruntime: torch here would cost ~480 MB.
                       torch_loaded="torch" in sys.modules)

    def read_frame(account: str, stream: str, seq: object, stamp: object, wav: bytes) -> Frame | str:
        """The frame, or what is wrong with it."""
        if not is_valid_account(account):
            return "account code must be 1-64 characters of A-Z a-z 0-9 _ -"
        if seq is not None and not (type(seq) is int and 0 <= seq < 10**18):
            return "seq must be a non-negative integer"
        try:
            frame_time = parse_stamp(stamp) if stamp is not None else None
            audio = decode_wav(wav, max_seconds=config.max_frame_seconds,
                               accepted_rates=config.accepted_rates or None,
                               accepted_subtypes=frozenset(config.accepted_formats) or None)
        except (ValueError, AudioError) as exc:
            return str(exc)
        return Frame(account, audio, stream, seq, frame_time)

    @app.post("/frames")
    def frames():
        if worker.draining.is_set():
            return error(503, "worker is shutting down: send the frame to another worker")
        seq_text = request.headers.get("X-Seq") or request.args.get("seq")
        if seq_text is not None and not (seq_text.isascii() and seq_text.isdigit() and len(seq_text) <= 18):
            return error(400, "seq must be a non-negative integer")
        frame = read_frame(request.headers.get("X-Account") or request.args.get("account", ""),
                           request.headers.get("X-Stream", ""), int(seq_text) if seq_text else None,
                           request.headers.get("X-Frame-Time"), request.get_data(cache=False))
        if isinstance(frame, str):
            return error(400, frame)
        reply = worker.pipeline.process_many([frame])[0]
        return json_response(reply, 409 if "error" in reply else 200)

    @app.post("/frames/batch")
    def frames_batch():
        """Several frames (voicestream/batch.py); one reply per frame, in order."""
        if worker.draining.is_set():
            return error(503, "worker is shutting down: send the frames to another worker")
        try:
            parts = decode_batch(request.get_data(cache=False))
        except BatchError as exc:
            return error(400, str(exc))
        replies: list[dict] = []
        good: list[tuple[int, Frame]] = []
        for meta, wav in parts:
            frame = read_frame(meta.get("account", ""), str(meta.get("stream", "")), meta.get("seq"),
                               meta.get("stamp"), wav)
            if isinstance(frame, str):
                replies.append({"error": frame, "status": 400})
            else:
                replies.append({})
                good.append((len(replies) - 1, frame))
        for (i, _), reply in zip(good, worker.pipeline.process_many([frame for _, frame in good])):
            replies[i] = {**reply, "status": 409} if "error" in reply else reply
        return json_response({"replies": replies}, 200)

    return app


def error(status: int, message: str):
    return json_response({"error": message}, status)


def json_response(body: dict, status: int) -> Response:
    # json.dumps straight into a Response: jsonify's provider machinery is a
    # noticeable share of a frame's CPU at a thousand frames a second.
    return Response(json.dumps(body), status=status, mimetype="application/json")
