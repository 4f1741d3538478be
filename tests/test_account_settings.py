"""An account's own decision threshold, in process (Flask's test client, the
GE2E graph): GET/PUT/DELETE /accounts/<code>/settings, what a bad body gets,
and /verify deciding with it. Streaming with it through a running system:
tests/test_speakers_api.py."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from speaker_helpers import DISABLED, read_wav, ready_app, worker_config
from voicestream.wav import encode_wav
from voicetools.paths import REPO
from worker.app import create_app

DATA = REPO / "data"


@pytest.fixture
def disabled(tmp_path: Path) -> Iterator[FlaskClient]:
    with create_app(worker_config(tmp_path, "none")).test_client() as client:
        yield client


@pytest.fixture(scope="module")
def ge2e_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return ready_app(worker_config(tmp_path_factory.mktemp("settings-app"), "ge2e"))


@pytest.fixture
def ge2e(ge2e_app: Flask) -> Iterator[FlaskClient]:
    with ge2e_app.test_client() as client:
        yield client


def error_of(reply: Any) -> str:
    assert reply.is_json, reply.data[:200]
    return reply.get_json()["error"]


def test_settings_need_an_encoder_and_a_valid_account(disabled: FlaskClient) -> None:
    for method in ("GET", "PUT", "DELETE"):
        reply = disabled.open("/accounts/acme/settings", method=method, json={"threshold": 0.8})
        assert reply.status_code == 503 and error_of(reply) == DISABLED, method
        reply = disabled.open("/accounts/ac.me/settings", method=method, json={"threshold": 0.8})
        assert reply.status_code == 400 and "invalid ACCOUNTCODE" in error_of(reply), method


@pytest.mark.parametrize("body, needle", [
    (b"threshold=0.8", "body must be JSON"),
    (b"null", "body must be JSON"),
    (b"[0.8]", "send JSON {\"threshold\""),
    (b"{}", "'threshold' is missing"),
    (b'{"threshold": 0.8, "margin": 0.1}', "unknown settings: 'margin'"),
    (b'{"threshold": "0.8"}', "'threshold' must be a number from -1 to 1, not \"0.8\""),
    (b'{"threshold": true}', "must be a number from -1 to 1, not true"),
    (b'{"threshold": null}', "must be a number from -1 to 1, not null"),
    (b'{"threshold": 1.5}', "'threshold' must be from -1 to 1 (a cosine score), not 1.5"),
    (b'{"threshold": -2}', "not -2"),
    (b'{"threshold": NaN}', "not nan"),
    (b'{"threshold": 1' + b"0" * 400 + b"}", "must be from -1 to 1"),
])
def test_a_bad_threshold_says_what_is_wrong(ge2e: FlaskClient, body: bytes, needle: str) -> None:
    reply = ge2e.put("/accounts/bad-body/settings", data=body, content_type="application/json")
    assert reply.status_code == 400 and needle in error_of(reply), error_of(reply)
    assert ge2e.get("/accounts/bad-body/settings").get_json()["threshold_source"] == "worker"  # nothing stored


def test_the_account_threshold_decides_verify(ge2e: FlaskClient) -> None:
    samples, rate = read_wav(DATA / "gb_male_16k.wav")
    half = len(samples) // 2
    assert ge2e.post("/accounts/own/speakers/gb", data=encode_wav(samples[:half], rate)).status_code == 201
    unseen = encode_wav(samples[half:], rate)
    default = ge2e.get("/accounts/own/settings").get_json()
    assert default == {"account": "own", "encoder": "ge2e", "threshold": 0.70, "threshold_source": "worker",
                       "worker_threshold": 0.70, "updated": None}
    before = ge2e.post("/accounts/own/verify", data=unseen).get_json()
    assert before["decision"] == "gb" and before["threshold"] == 0.70 and before["threshold_source"] == "worker"

    # Stricter than the score this voice reaches: the same audio is now nobody.
    strict = round(min(0.99, before["score"] + 0.05), 2)
    put = ge2e.put("/accounts/own/settings", json={"threshold": strict})
    assert put.status_code == 200, put.data
    assert put.get_json()["threshold"] == strict and put.get_json()["threshold_source"] == "account"
    assert put.get_json()["updated"] is not None
    assert ge2e.get("/accounts/own/settings").get_json() == put.get_json()
    after = ge2e.post("/accounts/own/verify", data=unseen).get_json()
    assert after["decision"] == "unknown" and after["best"] == "gb" and not after["match"]
    assert after["threshold"] == strict and after["threshold_source"] == "account"
    assert after["score"] == pytest.approx(before["score"], abs=1e-4)
    # Another account keeps the worker's.
    assert ge2e.get("/accounts/other/settings").get_json()["threshold"] == 0.70

    gone = ge2e.delete("/accounts/own/settings").get_json()
    assert gone["deleted"] is True and gone["threshold"] == 0.70 and gone["threshold_source"] == "worker"
    assert ge2e.post("/accounts/own/verify", data=unseen).get_json()["decision"] == "gb"
    assert ge2e.delete("/accounts/own/settings").get_json()["deleted"] is False


def test_a_lenient_threshold_is_taken_too(ge2e: FlaskClient) -> None:
    reply = ge2e.put("/accounts/lenient/settings", json={"threshold": -1})
    assert reply.status_code == 200 and reply.get_json()["threshold"] == -1.0
    samples, rate = read_wav(DATA / "us_female_16k.wav")
    assert ge2e.post("/accounts/lenient/speakers/f", data=encode_wav(samples, rate)).status_code == 201
    # Any voice passes a threshold of -1: the decision is the best speaker.
    other, other_rate = read_wav(DATA / "gb_male_16k.wav")
    verified = ge2e.post("/accounts/lenient/verify", data=encode_wav(other, other_rate)).get_json()
    assert verified["decision"] == "f" and verified["threshold"] == -1.0
    assert np.isfinite(verified["score"])
