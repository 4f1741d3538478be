"""The worker's frame and health routes in process (Flask's test client):
batches, per-frame validation, retries, oversize bodies, draining."""
from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from flask import Flask
from flask.testing import FlaskClient

from voicestream.batch import CONTENT_TYPE, PATH, FrameMeta, decode_replies, encode_batch
from voicestream.logline import parse_line
from voicestream.stamps import stamp_text
from voicestream.wav import encode_wav, split_frames
from voicetools.paths import REPO
from worker.app import create_app
from worker.config import WorkerConfig
from worker.context import EXTENSION, Worker

PORT = 7101
MAX_BODY_BYTES = 256 << 10
STAMP = 1_674_222_284_123_435  # 2023-01-20 13:44:44.123435


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(WorkerConfig(port=PORT, encoder="none", log_dir=str(tmp_path / "logs"),
                                   store_path=str(tmp_path / "voiceprints.db"),
                                   activity_log=str(tmp_path / "activity.log"), max_body_bytes=MAX_BODY_BYTES))


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as client:
        yield client


@pytest.fixture(scope="module")
def speech_frames() -> list[bytes]:
    """Two seconds of a committed recording as 100 ms 16 kHz frames."""
    samples, rate = sf.read(REPO / "data" / "us_female_16k.wav", dtype="int16")
    return split_frames(samples[:2 * rate], rate)


def post_batch(client: FlaskClient, frames: list[tuple[dict[str, Any], bytes]]) -> list[tuple[int, dict[str, Any]]]:
    """POST frames given as (meta as sent, wav); each frame's (status, reply), in order."""
    header = json.dumps({"frames": [{**meta, "size": len(wav)} for meta, wav in frames]}).encode()
    body = len(header).to_bytes(4, "big") + header + b"".join(wav for _, wav in frames)
    reply = client.post(PATH, data=body, content_type=CONTENT_TYPE)
    assert reply.status_code == 200, reply.get_json()
    answer = reply.get_json()
    assert set(answer) == {"statuses", "replies"}
    return decode_replies(answer, len(frames))


def meta(account: object = "acme", seq: object = 1, stamp: object = STAMP, stream: object = "s1") -> dict[str, Any]:
    return {"account": account, "stream": stream, "seq": seq, "stamp": stamp}


def log_lines(app: Flask, account: str) -> list[str]:
    worker: Worker = app.extensions[EXTENSION]
    path = Path(worker.config.log_dir) / f"{account}.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_health_names_the_worker_and_its_counts(client: FlaskClient, speech_frames: list[bytes]) -> None:
    assert client.get("/health").get_json() == {
        "status": "ok", "port": PORT, "accounts": 0, "frames": 0, "batches": 0,
        "speakers": {"encoder": "none", "state": "disabled"}, "database": {"mode": "embedded"},
        # This test process may hold torch for other tests (a worker's: test_worker_imports.py).
        "torch_loaded": "torch" in sys.modules, "worker_secret": "not required"}
    body = encode_batch([(FrameMeta("acme", "s1", i + 1, STAMP + i), wav) for i, wav in enumerate(speech_frames)])
    assert client.post(PATH, data=body, content_type=CONTENT_TYPE).status_code == 200
    health = client.get("/health").get_json()
    assert (health["accounts"], health["frames"], health["batches"]) == (1, len(speech_frames), 1)


def test_a_batch_is_answered_frame_by_frame_and_logged_once_per_frame(app: Flask, client: FlaskClient,
                                                                      speech_frames: list[bytes]) -> None:
    frames = [(meta("acme", i + 1, STAMP + i), wav) for i, wav in enumerate(speech_frames)]
    frames.insert(3, (meta("other", 1, STAMP + 100), speech_frames[0]))
    answered = post_batch(client, frames)
    assert [status for status, _ in answered] == [200] * len(frames)
    replies = [reply for _, reply in answered]
    for reply in replies:
        # VAD only: the analysis fields, and events where voice turned on or off.
        assert set(reply) - {"events"} == {"voice", "prob", "db", "worker", "ms"} and reply["worker"] == PORT
        assert reply["voice"] in (0, 1) and 0 <= reply["prob"] <= 1 and -100 <= reply["db"] <= 0
    assert any(r["voice"] == 1 for r in replies)
    lines = [parse_line(line) for line in log_lines(app, "acme")]
    assert [line.time for line in lines if line] == [stamp_text(STAMP + i) for i in range(len(speech_frames))]
    acme_replies = replies[:3] + replies[4:]
    assert [line.voice for line in lines if line] == [r["voice"] for r in acme_replies]
    # speech_start at each frame whose voice came on, speech_end at each where it went off, per account.
    before = 0
    for i, reply in enumerate(acme_replies):
        expected = ([{"type": "speech_start", "seq": i + 1, "time": stamp_text(STAMP + i)}] if reply["voice"] > before
                    else [{"type": "speech_end", "seq": i + 1, "time": stamp_text(STAMP + i)}]
                    if reply["voice"] < before else [])
        assert reply.get("events", []) == expected, (i, reply)
        before = reply["voice"]
    assert len(log_lines(app, "other")) == 1


def test_a_retried_frame_is_answered_again_not_redone(app: Flask, client: FlaskClient,
                                                      speech_frames: list[bytes]) -> None:
    first = post_batch(client, [(meta(seq=1, stamp=STAMP), speech_frames[0]),
                                (meta(seq=2, stamp=STAMP + 1), speech_frames[1])])
    again = post_batch(client, [(meta(seq=2, stamp=STAMP + 1), speech_frames[1]),
                                (meta(seq=1, stamp=STAMP), speech_frames[0])])
    # Each kept reply carries its frame's time: the time its log line has.
    assert again == [(200, {**first[1][1], "time": stamp_text(STAMP + 1), "duplicate": True}),
                     (200, {**first[0][1], "time": stamp_text(STAMP), "duplicate": True})]
    assert len(log_lines(app, "acme")) == 2


def test_a_frame_resent_with_a_new_stamp_is_answered_with_its_first_time(app: Flask, client: FlaskClient,
                                                                        speech_frames: list[bytes]) -> None:
    """A client that reconnects through another balancer resends the frames it
    had no reply to: same stream and seq, another balancer's stamp. Those the
    worker processed are answered from memory with the time of their line;
    a seq older than the replies kept is refused as processed; a seq the
    stream skipped is refused (frames are processed in seq order)."""
    stream = "c:call-7"
    first = post_batch(client, [(meta(seq=seq, stamp=STAMP + seq, stream=stream), speech_frames[seq % 10])
                                for seq in (*range(1, 20), 21)])
    assert all(status == 200 for status, _ in first)
    resent = post_batch(client, [(meta(seq=seq, stamp=STAMP + 1000 + seq, stream=stream), speech_frames[seq % 10])
                                 for seq in (21, 19, 3, 20, 22)])
    assert resent[0] == (200, {**first[-1][1], "time": stamp_text(STAMP + 21), "duplicate": True})
    assert resent[1] == (200, {**first[-2][1], "time": stamp_text(STAMP + 19), "duplicate": True})
    assert resent[2] == (409, {"error": f"frame seq 3 of stream {stream} was already processed", "duplicate": True})
    assert resent[3] == (409, {"error": f"frame seq 20 of stream {stream} comes after its seq 21: a stream's frames "
                                        "are processed in seq order, so it is not processed"})
    assert resent[4][0] == 200 and "duplicate" not in resent[4][1]  # the stream goes on
    lines = [parse_line(line) for line in log_lines(app, "acme")]
    assert [line.time for line in lines if line] == [stamp_text(STAMP + seq) for seq in (*range(1, 20), 21)] + \
        [stamp_text(STAMP + 1022)]


def wav_of(samples: np.ndarray, rate: int, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def test_each_bad_frame_gets_its_own_400_and_the_others_go_through(app: Flask, client: FlaskClient,
                                                                   speech_frames: list[bytes]) -> None:
    good = speech_frames[0]
    tone = (0.1 * np.sin(np.arange(1600) / 5)).astype(np.float32)
    cases: list[tuple[dict[str, Any], bytes, str]] = [
        (meta(account="../etc"), good, "use 1-64 characters of A-Z a-z 0-9 _ -"),
        (meta(account=""), good, "use 1-64 characters of A-Z a-z 0-9 _ -"),
        (meta(account="a" * 65), good, "use 1-64 characters of A-Z a-z 0-9 _ -"),
        (meta(account=7), good, "use 1-64 characters of A-Z a-z 0-9 _ -"),
        (meta(seq=-1), good, "seq must be a non-negative integer"),
        (meta(seq="3"), good, "seq must be a non-negative integer"),
        (meta(seq=1.5), good, "seq must be a non-negative integer"),
        (meta(seq=True), good, "seq must be a non-negative integer"),
        (meta(seq=10**18), good, "seq must be a non-negative integer"),
        (meta(stamp="12a"), good, "frame stamp must be microseconds"),
        (meta(stamp=-1), good, "frame stamp must be microseconds"),
        (meta(stream=7), good, "stream must be a string"),
        (meta(), b"", "empty body"),
        (meta(), b"hello, not a wav", "not a WAV"),
        (meta(), encode_wav(np.zeros(16000 + 800, np.int16), 16000), "audio too long"),
        (meta(), encode_wav(np.zeros(1000, np.int16), 1000), "sample rate 1000 Hz not accepted"),
        (meta(), wav_of(tone, 16000, "ULAW"), "unsupported WAV encoding ULAW"),
    ]
    frames = [(meta(account="fine", seq=1, stamp=STAMP), good)]
    frames += [(m, wav) for m, wav, _ in cases]
    frames += [(meta(account="fine", seq=2, stamp=STAMP + 1), good)]
    answered = post_batch(client, frames)
    assert answered[0][0] == answered[-1][0] == 200
    assert "error" not in answered[0][1] and "error" not in answered[-1][1]
    for (m, _, needle), (status, reply) in zip(cases, answered[1:-1], strict=True):
        assert status == 400 and needle in reply["error"], (m, reply)
        assert set(reply) == {"error"}
    assert len(log_lines(app, "fine")) == 2 and not log_lines(app, "acme")


@pytest.mark.parametrize("body, needle", [
    (b"", "batch body too short"),
    (b"\0\0\0\x05{nope", "not JSON"),
    (b"\0\0\0\x0c{\"frames\":1}", "1-256 frames"),
    (encode_batch([(FrameMeta("a", "s", 1, STAMP), b"RIFF")])[:-1], "do not match"),
])
def test_a_malformed_batch_is_refused_whole(client: FlaskClient, body: bytes, needle: str) -> None:
    reply = client.post(PATH, data=body, content_type=CONTENT_TYPE)
    assert reply.status_code == 400 and needle in reply.get_json()["error"]


def test_a_body_over_the_limit_gets_413_as_json(client: FlaskClient) -> None:
    reply = client.post(PATH, data=b"\0" * (MAX_BODY_BYTES + 1), content_type=CONTENT_TYPE)
    assert reply.status_code == 413 and "error" in reply.get_json()


def test_unknown_paths_and_methods_answer_json(client: FlaskClient) -> None:
    for method, path, status in [("GET", PATH, 405), ("POST", "/frames", 404), ("GET", "/nowhere", 404)]:
        reply = client.open(path, method=method)
        assert reply.status_code == status and reply.is_json and reply.get_json()["error"], (method, path)


def test_a_draining_worker_refuses_new_frames_and_health(app: Flask, client: FlaskClient,
                                                         speech_frames: list[bytes]) -> None:
    app.extensions[EXTENSION].draining.set()
    assert client.get("/health").status_code == 503
    assert client.get("/health").get_json() == {"status": "draining", "port": PORT}
    body = encode_batch([(FrameMeta("acme", "s1", 1, STAMP), speech_frames[0])])
    reply = client.post(PATH, data=body, content_type=CONTENT_TYPE)
    assert reply.status_code == 503
    assert reply.get_json() == {"error": "worker is shutting down: send the frames to another worker"}
    assert not log_lines(app, "acme")


def test_drain_is_taken_only_from_the_workers_own_machine(client: FlaskClient) -> None:
    refused = client.post("/drain", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert refused.status_code == 403 and "own machine" in refused.get_json()["error"]
    assert client.get("/health").status_code == 200
    taken = client.post("/drain", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert taken.status_code == 200 and taken.get_json() == {"status": "draining", "port": PORT}
    assert client.get("/health").get_json() == {"status": "draining", "port": PORT}
