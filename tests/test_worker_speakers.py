"""The speaker REST API of one worker in process (Flask's test client):
validation and refusals, with speakers disabled and with the GE2E graph."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from speaker_helpers import (
    DATA,
    DISABLED,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_SECONDS,
    api_config,
    error_of,
    multipart,
    read_wav,
    ready_app,
    silence,
)
from voicestream.batch import CONTENT_TYPE, PATH, FrameMeta, decode_replies, encode_batch
from voicestream.wav import encode_wav, split_frames
from worker.context import EXTENSION, Worker
from worker.storage.sqlite import SqliteVoiceprintStore
from worker.storage.voiceprints import EncoderId

pytest_plugins = ["speaker_apps"]  # disabled, ge2e_app, ge2e (an in-process worker each)

STAMP = 1_674_222_284_123_435  # 2023-01-20 13:44:44.123435


@pytest.fixture(scope="module")
def voices() -> dict[str, tuple[np.ndarray, int]]:
    return {"gb_male": read_wav(DATA / "gb_male_16k.wav"), "us_female": read_wav(DATA / "us_female_16k.wav")}


def half(voice: tuple[np.ndarray, int], second: bool = False) -> bytes:
    samples, rate = voice
    return encode_wav(samples[len(samples) // 2:] if second else samples[:len(samples) // 2], rate)


# --- any worker ------------------------------------------------------------------

BAD_PATHS = [
    (f"/accounts/{'a' * 65}/speakers/alice", "invalid ACCOUNTCODE"),
    ("/accounts/ac.me/speakers/alice", "invalid ACCOUNTCODE"),
    ("/accounts/acme/speakers/al%20ice", "speaker name"),
    ("/accounts/acme/speakers/al~ice", "speaker name"),
    ("/accounts/acme/speakers/.hidden", "speaker name"),
    ("/accounts/acme/speakers/unknown", "reserved"),
    ("/accounts/acme/speakers/UNKNOWN", "reserved"),
]


@pytest.mark.parametrize("path, needle", BAD_PATHS)
def test_bad_accounts_and_names_are_refused_before_anything_else(disabled: FlaskClient, path: str,
                                                                 needle: str) -> None:
    for method in ("POST", "GET", "DELETE"):
        reply = disabled.open(path, method=method, data=b"RIFF")
        assert reply.status_code == 400 and needle in error_of(reply), (method, path)


def test_with_speakers_disabled_every_speaker_call_says_how_to_enable_them(disabled: FlaskClient) -> None:
    wav = encode_wav(silence(1), 16000)
    for method, path in [("POST", "/accounts/acme/speakers/alice"), ("GET", "/accounts/acme/speakers"),
                         ("GET", "/accounts/acme/speakers/alice"), ("DELETE", "/accounts/acme/speakers/alice"),
                         ("DELETE", "/accounts/acme/speakers"), ("POST", "/accounts/acme/verify"),
                         ("POST", "/embed")]:
        reply = disabled.open(path, method=method, data=wav if method == "POST" else None)
        assert reply.status_code == 503 and error_of(reply) == DISABLED, (method, path)


def test_an_upload_over_the_limit_is_refused_on_its_length(disabled: FlaskClient) -> None:
    reply = disabled.post("/accounts/acme/speakers/alice", data=b"\0" * (MAX_UPLOAD_BYTES + 1))
    assert reply.status_code == 413
    assert error_of(reply) == f"request body too large: limit {MAX_UPLOAD_BYTES} bytes"


def voiceprint(vector: list[float], encoder: str = "ge2e", model: str = "39373b86598f") -> dict[str, Any]:
    return {"encoder": encoder, "model": model, "dim": len(vector), "vector": vector}


def test_compare_needs_no_encoder_and_scores_two_voiceprints(disabled: FlaskClient) -> None:
    reply = disabled.post("/compare", json={"a": voiceprint([1, 0, 0, 0]), "b": voiceprint([1, 1, 0, 0])})
    assert reply.status_code == 200
    assert reply.get_json() == {"score": 0.707107, "encoder": "ge2e", "model": "39373b86598f"}
    embedding = {"encoder": "ge2e", "model": "39373b86598f", "embedding": [0, 0, 0, 2]}
    assert disabled.post("/compare", json={"a": voiceprint([0, 0, 0, 1]), "b": embedding}).get_json()["score"] == 1


@pytest.mark.parametrize("body, status, needle", [
    ({"a": voiceprint([1, 0])}, 400, '"b"'),
    ([1, 2], 400, '"a"'),
    ({"a": voiceprint([1, 0]), "b": "x"}, 400, "'b' must be an object"),
    ({"a": voiceprint([1, 0]), "b": {**voiceprint([1, 0]), "dim": 3}}, 400, "'b.dim' is 3 but its vector has 2 values"),
    ({"a": voiceprint([1, 0]), "b": voiceprint([1, 0, 0])}, 400, "not comparable"),
    ({"a": voiceprint([1, 0]), "b": voiceprint([0.0, 0.0])}, 400, "all zeros"),
    ({"a": voiceprint([1, 0]), "b": voiceprint([1, True])}, 400, "list of at most 4096 numbers"),
    ({"a": voiceprint([1, 0]), "b": voiceprint([1.0] * 4097)}, 400, "list of at most 4096 numbers"),
    ({"a": voiceprint([1, 0]), "b": voiceprint([])}, 400, "non-empty list"),
    ({"a": voiceprint([1, 0]), "b": {"embedding": [1, 0]}}, 400, "'encoder' and 'model'"),
    ({"a": voiceprint([1, 0]), "b": voiceprint([1, 0], encoder="ecapa")}, 409, "across encoders"),
    ({"a": voiceprint([1, 0]), "b": voiceprint([1, 0], model="0123456789ab")}, 409, "across encoders"),
    # Found by schemathesis: an integer beyond the float range was a 500.
    ({"a": voiceprint([1, 0]), "b": voiceprint([10**400, 0])}, 400, "beyond the float range"),
])
def test_compare_says_what_is_wrong_with_a_body(disabled: FlaskClient, body: object, status: int,
                                                needle: str) -> None:
    reply = disabled.post("/compare", json=body)
    assert reply.status_code == status and needle in error_of(reply)


def test_compare_scores_huge_vectors_by_their_true_cosine(disabled: FlaskClient) -> None:
    # Found by schemathesis: norms near 1e308 overflowed, and the NaN score was clamped to 1.0.
    reply = disabled.post("/compare", json={"a": voiceprint([1e308, -1e308]), "b": voiceprint([1e308, 1e308])})
    assert reply.status_code == 200 and reply.get_json()["score"] == 0.0


def test_compare_needs_json(disabled: FlaskClient) -> None:
    reply = disabled.post("/compare", data=b"a=1", content_type="application/x-www-form-urlencoded")
    assert reply.status_code == 400 and "JSON" in error_of(reply)


# --- a GE2E worker -------------------------------------------------------------------

def test_bad_uploads_get_clear_errors(ge2e: FlaskClient, voices: dict[str, tuple[np.ndarray, int]]) -> None:
    speech, rate = voices["gb_male"]
    cases = [
        ("/accounts/acme/speakers/alice", b"hello, not audio", 400, "not a WAV"),
        ("/accounts/acme/speakers/alice", b"", 400, "empty body"),
        ("/accounts/acme/speakers/alice", encode_wav(silence(5), 16000), 422, "found 0.00 s of speech"),
        ("/accounts/acme/speakers/alice", encode_wav(speech[:2 * rate], rate), 422, "at least 3 s of speech"),
        ("/accounts/acme/speakers/alice", encode_wav(silence(MAX_UPLOAD_SECONDS + 1, 8000), 8000), 413,
         "audio too long"),
        ("/accounts/nobody/verify", half(voices["gb_male"], second=True), 404, "no enrolled speakers"),
        ("/embed", encode_wav(silence(3), 16000), 422, "speech"),
    ]
    for path, data, status, needle in cases:
        reply = ge2e.post(path, data=data, content_type="audio/wav")
        assert reply.status_code == status and needle in error_of(reply), (path, status, reply.get_json())
    body, content_type = multipart("audio", "x.wav", half(voices["gb_male"]))
    reply = ge2e.post("/accounts/acme/speakers/alice", data=body, content_type=content_type)
    assert reply.status_code == 400 and "'file' part" in error_of(reply)
    # Found by schemathesis: a part without a name was a 500.
    unnamed = b"--BB\r\nContent-Disposition: form-data\r\n\r\nhello\r\n--BB--\r\n"
    reply = ge2e.post("/embed", data=unnamed, content_type="multipart/form-data; boundary=BB")
    assert reply.status_code == 400 and "got parts: (unnamed)" in error_of(reply)
    assert ge2e.get("/accounts/acme/speakers/nobody").status_code == 404
    assert ge2e.delete("/accounts/acme/speakers/nobody").status_code == 404
    assert ge2e.get("/accounts/acme/speakers").get_json() == {"account": "acme", "speakers": []}


def test_a_voiceprint_of_another_encoder_is_never_scored(ge2e_app: Flask, ge2e: FlaskClient,
                                                         voices: dict[str, tuple[np.ndarray, int]]) -> None:
    account = "mixed"
    worker: Worker = ge2e_app.extensions[EXTENSION]
    # As if an ECAPA worker had enrolled eve in the shared store.
    SqliteVoiceprintStore(worker.config.store_path).enroll(
        account, "eve", EncoderId("ecapa", "0123456789ab", 192), np.ones(192, np.float32), 4.0)
    refused = ge2e.post(f"/accounts/{account}/speakers/eve", data=half(voices["us_female"]))
    assert refused.status_code == 409 and "made by encoder ecapa" in error_of(refused)
    only_other = ge2e.post(f"/accounts/{account}/verify", data=half(voices["us_female"], second=True))
    assert only_other.status_code == 409 and "other encoders" in error_of(only_other)
    enrolled = ge2e.post(f"/accounts/{account}/speakers/carol", data=half(voices["us_female"]))
    assert enrolled.status_code == 201, enrolled.get_json()
    verified = ge2e.post(f"/accounts/{account}/verify", data=half(voices["us_female"], second=True)).get_json()
    assert set(verified["scores"]) == {"carol"}
    assert verified["skipped"] == [{"name": "eve", "encoder": "ecapa", "model": "0123456789ab",
                                    "reason": "made by another encoder"}]
    listed = ge2e.get(f"/accounts/{account}/speakers").get_json()["speakers"]
    assert {(s["name"], s["encoder"]) for s in listed} == {("eve", "ecapa"), ("carol", "ge2e")}


def test_an_unreadable_store_keeps_tracking_with_its_voiceprints_and_the_api_a_503(
        tmp_path: Path, voices: dict[str, tuple[np.ndarray, int]]) -> None:
    """The SQLite store's errors reach the tracker and the routes as the
    storage protocol's StorageUnavailable: frames are still answered and
    logged, without a speaker; the speaker API says the store is unavailable.
    A worker of its own: its store is broken on purpose."""
    app = ready_app(api_config(tmp_path, "ge2e"))
    samples, rate = voices["gb_male"]
    frames = split_frames(samples[len(samples) // 2:], rate)
    batches = [frames[i:i + 10] for i in range(0, len(frames), 10)]  # the first decision comes after 3 s

    def post(client: FlaskClient, seq: int, batch: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
        body = encode_batch([(FrameMeta("broken", "s1", seq + i, STAMP + seq + i), wav)
                             for i, wav in enumerate(batch)])
        reply = client.post(PATH, data=body, content_type=CONTENT_TYPE)
        assert reply.status_code == 200, reply.get_json()
        return decode_replies(reply.get_json(), len(batch))

    with app.test_client() as client:
        assert client.post("/accounts/broken/speakers/gb", data=half(voices["gb_male"])).status_code == 201
        before = [reply for i, batch in enumerate(batches[:5]) for _, reply in post(client, 1 + 10 * i, batch)]
        assert any(reply.get("speaker") == "gb" for reply in before), before  # decided while readable
        with sqlite3.connect(tmp_path / "voiceprints.db") as conn:
            conn.execute("DROP TABLE voiceprints")
        after = [answered for i, batch in enumerate(batches[5:], 5) for answered in post(client, 1 + 10 * i, batch)]
        assert [status for status, _ in after] == [200] * len(after)
        # Tracking goes on with the voiceprints it had (as while a shared
        # database is down): the account's voiced frames keep being named.
        assert all("error" not in reply for _, reply in after), after
        assert any(reply.get("speaker") == "gb" for _, reply in after), after
        assert all(("speaker" in reply) == bool(reply["voice"]) for _, reply in after[10:]), after
        listed = client.get("/accounts/broken/speakers")
        assert listed.status_code == 503
        assert error_of(listed).startswith(f"voiceprint database unavailable, try again shortly: the voiceprint "
                                           f"store {tmp_path / 'voiceprints.db'} cannot be used (OperationalError: "
                                           "no such table: voiceprints)")
    assert len((tmp_path / "logs" / "broken.txt").read_text().splitlines()) == len(frames)
