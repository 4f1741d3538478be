"""ECAPA through a running system: a tiny checkpoint built with SpeechBrain's
own classes, loaded by the workers with EncoderClassifier.from_hparams from a
local directory (hub unreachable by configuration), enrolled and verified
through the balancer's REST API; and the 503 path when no model loads.
(A worker without an encoder, in process: test_worker_speakers.py.)"""
from __future__ import annotations

import numpy as np
import pytest

from ecapa_checkpoint import EMBEDDING_DIM, build_tiny_ecapa
from speaker_helpers import activity, call, read_wav, stream, wait_encoders
from voicestream.logline import parse_line
from voicestream.wav import encode_wav
from voicetools.cluster import make_system
from voicetools.paths import REPO
from worker.speakers.encoders import fingerprint

pytestmark = pytest.mark.integration

DATA = REPO / "data"


@pytest.fixture(scope="module")
def voices():
    return {"alice": read_wav(DATA / "gb_male_16k.wav"), "bob": read_wav(DATA / "us_female_16k.wav")}


def test_ecapa_enroll_verify_and_stream(tmp_path, voices):
    model = build_tiny_ecapa(tmp_path / "tiny-ecapa")
    system = make_system(tmp_path, n_workers=2, env={"HF_HUB_OFFLINE": "1"}, worker_args=[
        "--encoder", "ecapa", "--ecapa-source", str(model), "--model-dir", str(tmp_path / "models"),
        "--store", str(tmp_path / "voiceprints.db"), "--activity-log", str(tmp_path / "activity.log"),
        # Random weights: any threshold is as good as another.
        "--speaker-threshold", "0.5"])
    try:
        system.start()
        statuses = wait_encoders(system)
        assert all(s["state"] == "ready" and s["encoder"] == "ecapa" and s["dim"] == EMBEDDING_DIM
                   and s["model"] == fingerprint(model / "embedding_model.ckpt") for s in statuses), statuses
        # from_hparams collected the files under --model-dir, as links to the local source.
        collected = [p for p in (tmp_path / "models").iterdir() if p.name.startswith("local-tiny-ecapa-")]
        assert len(collected) == 1 and (collected[0] / "embedding_model.ckpt").resolve() == \
            (model / "embedding_model.ckpt").resolve()

        enroll_wavs = {}
        for name, (samples, rate) in voices.items():
            enroll_wavs[name] = encode_wav(samples[:len(samples) // 2], rate)
            reply = call(f"{system.url}/accounts/acme/speakers/{name}", "POST", enroll_wavs[name])
            assert reply.status == 201, reply.body
            assert reply.body["encoder"] == "ecapa" and reply.body["dim"] == EMBEDDING_DIM
        vector = call(f"{system.url}/accounts/acme/speakers/alice?vector=1").body["vector"]
        assert len(vector) == EMBEDDING_DIM and np.linalg.norm(vector) == pytest.approx(1, abs=1e-5)

        for name in voices:
            # The enrollment audio itself: its voiceprint holds the recording's
            # embedding (with the mean of its streaming windows), so /verify
            # scores it as the cosine of that voiceprint and /embed's vector.
            verified = call(f"{system.url}/accounts/acme/verify", "POST", enroll_wavs[name])
            assert verified.status == 200, verified.body
            v = verified.body
            assert v["encoder"] == "ecapa" and set(v["scores"]) == set(voices)
            own = np.array(call(f"{system.url}/accounts/acme/speakers/{name}?vector=1").body["vector"])
            whole = np.array(call(f"{system.url}/embed", "POST", enroll_wavs[name]).body["embedding"])
            assert v["best"] == name and v["decision"] == name
            assert v["score"] == pytest.approx(float(own @ whole), abs=1e-3) and v["score"] > 0.9

        samples, rate = voices["alice"]
        replies = stream(system, "acme", samples[len(samples) // 2:], rate)
        assert any("speaker" in r for r in replies)
        assert all("speaker" not in r for r in replies if r["voice"] == 0)
        lines = system.account_log("acme")
        assert len(lines) == len(replies) and all(parse_line(line) for line in lines)
        events = [e["event"] for e in activity(tmp_path / "activity.log")]
        assert events == ["enroll", "enroll", "verify", "verify"]
    finally:
        system.stop()


def test_without_a_model_speaker_requests_get_503_and_vad_goes_on(tmp_path, voices):
    empty = tmp_path / "no-model-here"
    empty.mkdir()
    system = make_system(tmp_path, n_workers=1, env={"HF_HUB_OFFLINE": "1"}, worker_args=[
        "--encoder", "ecapa", "--ecapa-source", str(empty), "--model-dir", str(tmp_path / "models"),
        "--store", str(tmp_path / "voiceprints.db"), "--activity-log", str(tmp_path / "activity.log")])
    try:
        system.start()
        [status] = wait_encoders(system)
        assert status["state"] == "unavailable" and "--ecapa-source" in status["reason"]

        samples, rate = voices["alice"]
        wav = encode_wav(samples[:len(samples) // 2], rate)
        for method, path, data in [("POST", "/accounts/acme/speakers/alice", wav),
                                   ("GET", "/accounts/acme/speakers", None),
                                   ("GET", "/accounts/acme/speakers/alice", None),
                                   ("DELETE", "/accounts/acme/speakers", None), ("POST", "/accounts/acme/verify", wav),
                                   ("POST", "/embed", wav)]:
            reply = call(f"{system.url}{path}", method, data)
            assert reply.status == 503, (path, reply)
            error = reply.body["error"]
            assert "ECAPA model could not be loaded" in error and "--ecapa-source DIR" in error
            assert "--encoder ge2e" in error

        replies = stream(system, "acme", samples[:3 * rate], rate)
        assert any(r["voice"] == 1 for r in replies) and all("speaker" not in r for r in replies)
        assert len(system.account_log("acme")) == len(replies)
    finally:
        system.stop()

