"""POST /frames/batch: the frames the balancer sends together
(voicestream/batch.py), one reply per frame, in order."""
from __future__ import annotations

from flask import Blueprint, Response, request

from voicestream.accounts import invalid_account_message, is_valid_account
from voicestream.batch import PATH, BatchError, decode_batch
from voicestream.replies import FrameReply
from voicestream.stamps import check_stamp

from ..audio import AudioError, decode_wav
from ..config import WorkerConfig
from ..context import current_worker
from ..pipeline import Frame
from .replies import error, json_response

bp = Blueprint("frames", __name__)


def read_frame(config: WorkerConfig, meta: dict, wav: bytes) -> Frame | str:
    """The frame, or what is wrong with it."""
    account, seq, stamp = meta.get("account", ""), meta.get("seq"), meta.get("stamp")
    if not is_valid_account(account):
        return invalid_account_message(account)
    if seq is not None and not (type(seq) is int and 0 <= seq < 10**18):
        return "seq must be a non-negative integer"
    try:
        frame_stamp = check_stamp(stamp) if stamp is not None else None
        audio = decode_wav(wav, max_seconds=config.max_frame_seconds,
                           accepted_rates=config.accepted_rates or None,
                           accepted_subtypes=frozenset(config.accepted_formats) or None)
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
    for meta, wav in parts:
        frame = read_frame(worker.config, meta, wav)
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
