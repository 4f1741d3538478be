"""The balancer -> worker batch format, and batching under load."""
from __future__ import annotations

import asyncio
import json
import struct
import urllib.request

import pytest

from voicestream.batch import BatchError, FrameMeta, decode_batch, encode_batch


def test_round_trip():
    frames = [(FrameMeta("a", "s1", 1, 10), b"RIFF1"), (FrameMeta("b", "s2", 7, 11), b""),
              (FrameMeta("a", "s1", 2, 12), b"RIFF333")]
    decoded = decode_batch(encode_batch(frames))
    assert [wav for _, wav in decoded] == [b"RIFF1", b"", b"RIFF333"]
    assert [m["account"] for m, _ in decoded] == ["a", "b", "a"] and decoded[1][0]["seq"] == 7


def body(header: object, payload: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">I", len(raw)) + raw + payload


@pytest.mark.parametrize("data, message", [
    (b"", "too short"),
    (struct.pack(">I", 5) + b"{nope", "not JSON"),
    (body([1, 2]), "not JSON with a 'frames' list"),
    (body({"frames": []}), "1-256 frames"),
    (body({"frames": [{}] * 300}), "1-256 frames"),
    (body({"frames": [{"size": 10}]}, b"abc"), "do not match"),
    (body({"frames": [{"size": -1}]}), "do not match"),
    (body({"frames": ["x"]}), "do not match"),
    (body({"frames": [{"size": 1}]}, b"ab"), "longer than its frames"),
])
def test_malformed_batches(data, message):
    with pytest.raises(BatchError, match=message):
        decode_batch(data)


@pytest.mark.integration
def test_worker_batches_frames_under_load_and_answers_each(tmp_path, speech):
    """Many concurrent streams on one worker: the balancer sends frames that
    wait together in one request, and every frame still gets its own reply and
    log line (results equal to solo runs are checked in test_end_to_end)."""
    from test_end_to_end import frames_of, read, stream
    from voicetools.cluster import make_system

    frames = frames_of(*read(speech("sample1.wav"), seconds=5))
    system = make_system(tmp_path, n_workers=1, worker_args=["--encoder", "none"]).start()
    try:
        async def together():
            return await asyncio.gather(*(stream(system.ws_url, f"load{i}", frames) for i in range(24)))
        results = asyncio.run(together())
        with urllib.request.urlopen(system.worker_url(0) + "/health") as resp:
            health = json.load(resp)
    finally:
        system.stop()
    assert all(len(replies) == len(frames) and not any("error" in r for r in replies) for replies in results)
    assert all(len(system.account_log(f"load{i}")) == len(frames) for i in range(24))
    assert health["frames"] == 24 * len(frames)
    assert health["batches"] < 0.8 * health["frames"], health  # frames did travel together
