"""POST /frames/batch: the frames the balancer sends together
(voicestream/batch.py), one status and one reply per frame, in order; POST
/streams/close: a stream's CLOSE, its pending final labels."""
from __future__ import annotations

import json
from dataclasses import dataclass

from flask import Blueprint, Response, request

from voicestream.batch import (
    CLOSE_PATH,
    PATH,
    BatchError,
    BatchFrame,
    InvalidFrame,
    decode_batch,
    decode_close,
    encode_replies,
)
from voicestream.replies import FrameReply

from ..audio import AudioError, decode_wav
from ..config import WorkerConfig
from ..pipeline import Frame
from . import current_worker
from .replies import error, json_text

bp = Blueprint("frames", __name__)


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """What a frame may be: read from the config once per batch, not per frame."""
    max_seconds: float
    rates: tuple[int, ...] | None
    subtypes: frozenset[str] | None

    @classmethod
    def of(cls, config: WorkerConfig) -> FrameLimits:
        return cls(config.max_frame_seconds, config.accepted_rates or None,
                   frozenset(config.accepted_formats) or None)


def read_frame(limits: FrameLimits, part: BatchFrame | InvalidFrame) -> Frame | str:
    """The frame (its meta decode_batch checked, its WAV decoded), or what is wrong with it."""
    if isinstance(part, InvalidFrame):
        return part.error
    meta, wav = part
    try:
        audio = decode_wav(wav, max_seconds=limits.max_seconds, accepted_rates=limits.rates,
                           accepted_subtypes=limits.subtypes)
    except AudioError as exc:
        return str(exc)
    return Frame(meta.account, audio, meta.stream, meta.seq, meta.stamp)


@bp.post(PATH)
def frames_batch() -> Response:
    worker = current_worker()
    metrics = worker.pipeline.metrics
    if worker.draining.is_set():
        metrics.rejected["draining"].inc()
        return error(503, "worker is shutting down: send the frames to another worker")
    try:
        parts = decode_batch(request.get_data(cache=False))
    except BatchError as exc:
        metrics.rejected["malformed"].inc()
        return error(400, str(exc))
    metrics.batch_frames.observe(len(parts))
    statuses = [200] * len(parts)
    replies: list[FrameReply] = [{}] * len(parts)  # every slot is filled below
    good: list[int] = []
    frames: list[Frame] = []
    limits = FrameLimits.of(worker.config)
    for i, part in enumerate(parts):
        frame = read_frame(limits, part)
        if isinstance(frame, str):
            metrics.invalid.inc()
            statuses[i], replies[i] = 400, {"error": frame}
        else:
            good.append(i)
            frames.append(frame)
    for i, reply in zip(good, worker.pipeline.process_many(frames), strict=True):
        replies[i] = reply
        if "error" in reply:  # a seq of its stream already passed
            statuses[i] = 409
        metrics.answered(reply)
    return json_text(encode_replies(statuses, replies), 200)


@bp.post(CLOSE_PATH)
def close_stream() -> Response:
    worker = current_worker()
    try:
        account, stream = decode_close(request.get_data(cache=False))
    except BatchError as exc:
        return error(400, str(exc))
    return json_text(json.dumps({"events": worker.pipeline.close_stream(account, stream)}), 200)
