"""The balancer -> worker wire format for several frames in one request.

    4 bytes   length N of the header, big-endian
    N bytes   JSON: {"frames": [{"account", "stream", "seq", "stamp", "size"}, ...]}
    ...       the frames' WAV bytes, back to back, `size` bytes each

One request per frame costs a worker more CPU in HTTP handling than its VAD;
under load the balancer sends the frames that wait for the same worker together.
The worker answers {"replies": [...]}: one reply per frame, in order, each
with its own "status" when it is not 200 (replies.py).
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

CONTENT_TYPE = "application/x-voice-frames"
PATH = "/frames/batch"
MAX_FRAMES = 256


class BatchError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class FrameMeta:
    account: str
    stream: str  # the client connection: with seq, names the frame to the worker
    seq: int
    stamp: int  # microseconds since the epoch, UTC (stamps.py)


def encode_batch(frames: list[tuple[FrameMeta, bytes]]) -> bytes:
    header = json.dumps({"frames": [{"account": m.account, "stream": m.stream, "seq": m.seq, "stamp": m.stamp,
                                     "size": len(wav)} for m, wav in frames]}).encode()
    return b"".join([struct.pack(">I", len(header)), header, *(wav for _, wav in frames)])


def decode_batch(body: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """(meta as sent, wav bytes) per frame; metas are checked by the caller."""
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
    frames, offset = [], 4 + n
    for meta in metas:
        size = meta.get("size") if isinstance(meta, dict) else None
        if type(size) is not int or size < 0 or offset + size > len(body):
            raise BatchError("batch frame sizes do not match the body")
        frames.append((meta, body[offset:offset + size]))
        offset += size
    if offset != len(body):
        raise BatchError("batch body is longer than its frames")
    return frames
