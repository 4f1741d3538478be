"""The balancer -> worker batch format (frames out, statuses and replies
back), and batching under load."""
from __future__ import annotations

import asyncio
import json
import struct
import urllib.request

import pytest

from voicestream.batch import (
    BatchError,
    FrameMeta,
    InvalidFrame,
    decode_batch,
    decode_replies,
    encode_batch,
    encode_replies,
)


def test_round_trip():
    frames = [(FrameMeta("a", "s1", 1, 10), b"RIFF1"), (FrameMeta("b", "s2", 7, 11), b""),
              (FrameMeta("a", "s1", 2, 12), b"RIFF333")]
    assert decode_batch(encode_batch(frames)) == frames


def body(header: object, payload: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">I", len(raw)) + raw + payload


GOOD = {"account": "acme", "stream": "s1", "seq": 1, "stamp": 1_674_222_284_123_435}


@pytest.mark.parametrize("changed, error", [
    ({"account": "../etc"}, "invalid ACCOUNTCODE '../etc'"),
    ({"account": 7}, "invalid ACCOUNTCODE 'int'"),
    ({"account": None}, "invalid ACCOUNTCODE 'NoneType'"),
    ({"seq": -1}, "seq must be a non-negative integer"),
    ({"seq": "3"}, "seq must be a non-negative integer"),
    ({"seq": True}, "seq must be a non-negative integer"),
    ({"seq": 10**18}, "seq must be a non-negative integer"),
    ({"stamp": 1.5}, "frame stamp must be microseconds since the epoch"),
    ({"stamp": 10**17}, "frame stamp must be microseconds since the epoch"),
    ({"stream": ["s1"]}, "stream must be a string"),
])
def test_a_frame_with_a_wrong_meta_is_refused_alone(changed: dict, error: str):
    """decode_batch checks every meta once; the batch's other frames stay as sent."""
    decoded = decode_batch(body({"frames": [{**GOOD, "size": 4}, {**GOOD, **changed, "size": 2},
                                            {**GOOD, "seq": 2, "size": 3}]}, b"RIFFabxyz"))
    assert decoded[0] == (FrameMeta("acme", "s1", 1, GOOD["stamp"]), b"RIFF")
    assert isinstance(decoded[1], InvalidFrame) and decoded[1].error.startswith(error), decoded[1]
    assert decoded[2] == (FrameMeta("acme", "s1", 2, GOOD["stamp"]), b"xyz")


def test_a_meta_may_leave_out_stream_seq_and_stamp():
    """As the worker always took them: such a frame is not recognised as a
    retry and is stamped on arrival (the balancer sends all three); a stamp
    may also come as digits."""
    bare = body({"frames": [{"account": "acme", "size": 1}]}, b"R")
    assert decode_batch(bare) == [(FrameMeta("acme", "", None, None), b"R")]
    assert decode_batch(body({"frames": [{**GOOD, "stamp": "1674222284123435", "size": 0}]}))[0] == \
        (FrameMeta("acme", "s1", 1, 1_674_222_284_123_435), b"")


def test_statuses_travel_beside_the_replies():
    replies = [{"voice": 1, "prob": 0.9, "db": -20.0, "worker": 7001, "ms": 1.2}, {"error": "not a WAV file"},
               {"error": "frame seq 1 of stream s1 was already processed", "duplicate": True}]
    answer = json.loads(encode_replies([200, 400, 409], replies))
    assert answer == {"statuses": [200, 400, 409], "replies": replies}
    assert decode_replies(answer, 3) == [(200, replies[0]), (400, replies[1]), (409, replies[2])]


@pytest.mark.parametrize("answer", [
    [], {"replies": [{}]}, {"statuses": [200]}, {"statuses": [200, 200], "replies": [{}]},
    {"statuses": [200], "replies": [{}, {}]}, {"statuses": ["200"], "replies": [{}]},
    {"statuses": [200], "replies": ["ok"]}, {"statuses": [200, 200], "replies": [{}, {}]},
])
def test_an_answer_that_is_not_one_status_and_reply_per_frame_is_refused(answer: object):
    with pytest.raises(BatchError, match="no status and reply lists for a batch of 1"):
        decode_replies(answer, 1)


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
