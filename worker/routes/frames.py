"""POST /frames/batch: the frames the balancer sends together
(voicestream/batch.py), one reply per frame, in order."""
from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Response, request

from voicestream.accounts import invalid_account_message, is_valid_account
from voicestream.batch import PATH, BatchError, decode_batch
from voicestream.replies import FrameReply
from voicestream.stamps import check_stamp

from ..audio import AudioError, decode_wav
from ..config import WorkerConfig
from ..pipeline import Frame
from . import current_worker
from .replies import error, json_response

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


def read_frame(limits: FrameLimits, meta: dict, wav: bytes) -> Frame | str:
    """The frame, or what is wrong with it."""
    account, seq, stamp = meta.get("account", ""), meta.get("seq"), meta.get("stamp")
    if not is_valid_account(account):
        return invalid_account_message(account)
    if seq is not None and not (type(seq) is int and 0 <= seq < 10**18):
        return "seq must be a non-negative integer"
    try:
        frame_stamp = check_stamp(stamp) if stamp is not None else None
        audio = decode_wav(wav, max_seconds=limits.max_seconds, accepted_rates=limits.rates,
                           accepted_subtypes=limits.subtypes)
    except (ValueError, AudioError) as exc:
        return str(exc)
    return Frame(account, audio, str(meta.get("stream", "")), seq, frame_stamp)


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
    replies: list[FrameReply] = []
    good: list[tuple[int, Frame]] = []
    limits = FrameLimits.of(worker.config)
    for meta, wav in parts:
        frame = read_frame(limits, meta, wav)
        if isinstance(frame, str):
            metrics.invalid.inc()
            replies.append({"error": frame, "status": 400})
        else:
            replies.append({})
            good.append((len(replies) - 1, frame))
    for (i, _), reply in zip(good, worker.pipeline.process_many([frame for _, frame in good]), strict=True):
        replies[i] = {**reply, "status": 409} if "error" in reply else reply
        metrics.answered(reply)
    return json_response({"replies": replies}, 200)
