"""POST /frames/batch: the frames the balancer sends together
(voicestream/batch.py), one status and one reply per frame, in order; POST
/streams/close: a stream's CLOSE, its pending final labels.

A frame's status says what the balancer may do with it: 200 (ok or a
duplicate), 400 (unreadable), 409 (an older seq of its stream), 500 (its
account's record cannot be written here: any worker of this host would fail
it too, so it is not retried), 503 (this worker cannot write records now:
another worker can take it). A batch refused whole gets 503 while the worker
drains or is degraded (nothing of it was processed), 400 when malformed."""
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
from ..pipeline import Frame, FrameAnswer, Outcome, RecordFailed
from ..storage.guard import Fault
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
    fault = worker.pipeline.guard.fault()  # looks at the disk at most once a second
    if fault is not None:
        metrics.rejected["degraded"].inc()
        metrics.not_recorded(fault.reason, len(parts))
        return error(503, f"{degraded(fault)}: send the frames to another worker")
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
    for i, answer in zip(good, worker.pipeline.answer(frames), strict=True):
        replies[i] = answer.reply
        statuses[i] = status_of(answer)
        if answer.fault is not None:
            metrics.unrecorded.inc()
            metrics.not_recorded(answer.fault.reason)
        else:
            (metrics.ok if answer.outcome is Outcome.OK else metrics.duplicate).inc()
    return json_text(encode_replies(statuses, replies), 200)


def status_of(answer: FrameAnswer) -> int:
    """A frame's own status inside its batch's 200 (see the module's docstring)."""
    if answer.fault is not None:
        return 503 if answer.fault.worker_wide else 500
    return 409 if answer.outcome is Outcome.PASSED else 200


def degraded(fault: Fault) -> str:
    return f"this worker cannot record frames now: {fault.message}"


@bp.post(CLOSE_PATH)
def close_stream() -> Response:
    worker = current_worker()
    try:
        account, stream = decode_close(request.get_data(cache=False))
    except BatchError as exc:
        return error(400, str(exc))
    try:
        events = worker.pipeline.close_stream(account, stream)
    except RecordFailed as exc:
        fault = exc.fault
        return error(503 if fault.worker_wide else 500, degraded(fault) if fault.worker_wide else fault.message)
    return json_text(json.dumps({"events": events}), 200)
