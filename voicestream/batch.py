"""The balancer -> worker wire format: several frames in one request, and the
worker's answer, one reply per frame.

The request body:

    4 bytes   length N of the header, big-endian
    N bytes   JSON: {"frames": [{"account", "stream", "seq", "stamp", "size"}, ...]}
    ...       the frames' WAV bytes, back to back, `size` bytes each

One request per frame costs a worker more CPU in HTTP handling than its VAD;
under load the balancer sends the frames that wait for the same worker together.

The answer to a batch the worker took (HTTP 200), frame i at index i of both
lists:

    {"statuses": [200, 400, ...], "replies": [{...}, {...}, ...]}

A frame's status is its own HTTP status: 200, 400 for a frame the worker
cannot read, 409 for a seq of its stream already passed, 500 for a frame
whose account's record cannot be written there (not retried), 503 for one
the worker cannot record now (retried on the next worker). It travels beside
the reply, never inside it: a reply (replies.py) is what the client receives.
A batch refused whole (400 malformed, 413 too large, 503 draining or
degraded) gets that status and {"error": ...} instead.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .accounts import invalid_account_message, is_valid_account
from .replies import FrameReply
from .stamps import check_stamp

CONTENT_TYPE = "application/x-voice-frames"
PATH = "/frames/batch"
MAX_FRAMES = 256
MAX_SEQ = 10**18


class BatchError(ValueError):
    """A body or an answer that is not this format; the message says how."""


@dataclass(frozen=True, slots=True)
class FrameMeta:
    account: str
    stream: str  # the client connection: with seq, names the frame to the worker
    # The balancer always sends both; a frame without them is neither
    # recognised as a retry (seq) nor logged once across workers (stamp).
    seq: int | None
    stamp: int | None  # microseconds since the epoch, UTC (stamps.py)


@dataclass(frozen=True, slots=True)
class InvalidFrame:
    """A frame of a batch whose meta was refused: its reply's error (a 400 of
    that frame alone; the batch's other frames go on)."""
    error: str


BatchFrame = tuple[FrameMeta, bytes]  # a frame's meta and its WAV bytes


def encode_batch(frames: Sequence[BatchFrame]) -> bytes:
    header = json.dumps({"frames": [{"account": m.account, "stream": m.stream, "seq": m.seq, "stamp": m.stamp,
                                     "size": len(wav)} for m, wav in frames]}).encode()
    return b"".join([struct.pack(">I", len(header)), header, *(wav for _, wav in frames)])


def decode_batch(body: bytes) -> list[BatchFrame | InvalidFrame]:
    """Each frame's meta, checked, with its WAV bytes (which the worker
    decodes); or, for a frame whose meta is wrong, what is wrong with it.
    BatchError for a body that is not a batch at all."""
    if len(body) < 4:
        raise BatchError("batch body too short")
    (n,) = struct.unpack(">I", body[:4])
    try:
        header = json.loads(body[4:4 + n])
        metas = header["frames"]
    except (ValueError, TypeError, KeyError):
        raise BatchError("batch header is not JSON with a 'frames' list") from None
    if not isinstance(metas, list) or not 0 < len(metas) <= MAX_FRAMES:
        raise BatchError(f"a batch holds 1-{MAX_FRAMES} frames")
    frames: list[BatchFrame | InvalidFrame] = []
    offset = 4 + n
    for meta in metas:
        size = meta.get("size") if isinstance(meta, dict) else None
        if type(size) is not int or size < 0 or offset + size > len(body):
            raise BatchError("batch frame sizes do not match the body")
        checked = check_meta(meta)
        frames.append(checked if isinstance(checked, InvalidFrame) else (checked, body[offset:offset + size]))
        offset += size
    if offset != len(body):
        raise BatchError("batch body is longer than its frames")
    return frames


def check_meta(meta: dict[str, object]) -> FrameMeta | InvalidFrame:
    """A frame's meta as sent, checked: the one place the worker validates it."""
    account, stream, seq, stamp = meta.get("account", ""), meta.get("stream", ""), meta.get("seq"), meta.get("stamp")
    if not is_valid_account(account):
        return InvalidFrame(invalid_account_message(account))
    if seq is not None and not (type(seq) is int and 0 <= seq < MAX_SEQ):
        return InvalidFrame("seq must be a non-negative integer")
    try:
        frame_stamp = check_stamp(stamp) if stamp is not None else None
    except ValueError as exc:
        return InvalidFrame(str(exc))
    if not isinstance(stream, str):
        return InvalidFrame("stream must be a string")
    return FrameMeta(account, stream, seq, frame_stamp)


def encode_replies(statuses: Sequence[int], replies: Sequence[FrameReply]) -> str:
    """The worker's answer to a batch it took: status and reply of each frame, in order."""
    return json.dumps({"statuses": statuses, "replies": replies})


def decode_replies(answer: object, frames: int) -> list[tuple[int, FrameReply]]:
    """(status, reply) of each of a batch's frames from the worker's answer
    (JSON, parsed); BatchError if it is not one for `frames` frames."""
    statuses = answer.get("statuses") if isinstance(answer, dict) else None
    replies = answer.get("replies") if isinstance(answer, dict) else None
    if not (isinstance(statuses, list) and isinstance(replies, list) and len(statuses) == len(replies) == frames
            and all(type(status) is int for status in statuses) and all(isinstance(r, dict) for r in replies)):
        raise BatchError(f"worker gave no status and reply lists for a batch of {frames}")
    return list(zip(statuses, replies, strict=True))


# A stream's CLOSE, balancer -> the worker of each account the stream sent
# frames for: {"account": ..., "stream": ...}; the worker makes the account's
# pending final labels final and answers {"events": [...]}, the events owed to
# that stream (events.py). Also sent, and its answer dropped, when a client
# goes away without CLOSE, so the account's record gets every final label.
CLOSE_PATH = "/streams/close"
MAX_STREAM_CHARS = 128


def encode_close(account: str, stream: str) -> bytes:
    return json.dumps({"account": account, "stream": stream}).encode()


def decode_close(body: bytes) -> tuple[str, str]:
    """(account, stream) of a CLOSE_PATH body; BatchError naming what is wrong."""
    try:
        value = json.loads(body)
    except ValueError:
        raise BatchError('a close is JSON: {"account": ..., "stream": ...}') from None
    if not isinstance(value, dict):
        raise BatchError('a close is a JSON object: {"account": ..., "stream": ...}')
    account, stream = value.get("account"), value.get("stream")
    if not is_valid_account(account):
        raise BatchError(invalid_account_message(account))
    if not isinstance(stream, str) or not 0 < len(stream) <= MAX_STREAM_CHARS:
        raise BatchError(f"stream must be a string of 1-{MAX_STREAM_CHARS} characters")
    return account, stream
