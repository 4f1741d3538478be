"""Speaker verification through a running system (balancer + 3 workers with
the GE2E encoder): REST API, streaming decisions, log lines, activity log,
the shared voiceprint store across workers and restarts. (One worker's
validation and refusals, in process: test_worker_speakers.py.)

Audio: the committed espeak samples in data/ (three synthetic voices, one at
8 kHz), so these tests run without ../shared.
"""
from __future__ import annotations

import http.client
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speaker_helpers import activity, call, call_json, ge2e_system, multipart, read_wav, silence, stream, wait_encoders
from voicestream.logline import parse_line
from voicestream.wav import encode_wav
from voicetools.paths import REPO

pytestmark = pytest.mark.integration

DATA = REPO / "data"
MAX_UPLOAD_SECONDS = 30
MAX_UPLOAD_BYTES = 4 << 20


@pytest.fixture(scope="module")
def ge2e(tmp_path_factory):
    with ge2e_system(tmp_path_factory.mktemp("speakers-api"),
                     worker_args=["--max-upload-seconds", str(MAX_UPLOAD_SECONDS),
                                  "--max-upload-bytes", str(MAX_UPLOAD_BYTES)],
                     balancer_args=["--max-upload-bytes", str(MAX_UPLOAD_BYTES)]) as system:
        yield system


@pytest.fixture(scope="module")
def voices() -> dict[str, tuple[np.ndarray, int]]:
    """name -> (int16 samples, rate): three synthetic voices."""
    return {"gb_male": read_wav(DATA / "gb_male_16k.wav"), "us_female": read_wav(DATA / "us_female_16k.wav"),
            "us_male": read_wav(DATA / "us_male_8k.wav")}


def first_half(voice: tuple[np.ndarray, int]) -> bytes:
    samples, rate = voice
    return encode_wav(samples[:len(samples) // 2], rate)


def second_half(voice: tuple[np.ndarray, int]) -> bytes:
    samples, rate = voice
    return encode_wav(samples[len(samples) // 2:], rate)


def enroll(url: str, account: str, name: str, wav: bytes) -> dict:
    reply = call(f"{url}/accounts/{account}/speakers/{name}", "POST", wav)
    assert reply.status == 201, reply.body
    return reply.body


def activity_log(system) -> Path:
    return system.root / "activity.log"


def test_every_worker_loads_ge2e(ge2e):
    statuses = wait_encoders(ge2e)
    assert [s["state"] for s in statuses] == ["ready"] * 3
    assert {s["encoder"] for s in statuses} == {"ge2e"} and {s["dim"] for s in statuses} == {256}
    assert len({s["model"] for s in statuses}) == 1 and statuses[0]["threshold"] == 0.70


def test_enroll_list_get_delete(ge2e, voices):
    url, account = ge2e.url, "crud"
    first = enroll(url, account, "alice", first_half(voices["gb_male"]))
    assert first["samples"] == 1 and first["encoder"] == "ge2e" and first["name"] == "alice"
    assert 3.0 <= first["speech_seconds"] <= 6.6
    body, content_type = multipart("file", "alice.wav", second_half(voices["gb_male"]))
    second = call(f"{url}/accounts/{account}/speakers/alice", "POST", body, content_type)
    assert second.status == 201, second.body
    assert second.body["samples"] == 2
    assert second.body["speech_seconds"] == pytest.approx(first["speech_seconds"]
                                                          + second.body["sample_speech_seconds"], abs=0.02)

    listed = call(f"{url}/accounts/{account}/speakers")
    assert listed.status == 200 and [s["name"] for s in listed.body["speakers"]] == ["alice"]
    meta = call(f"{url}/accounts/{account}/speakers/alice")
    assert meta.status == 200 and meta.body["samples"] == 2 and "vector" not in meta.body
    with_vector = call(f"{url}/accounts/{account}/speakers/alice?vector=1").body
    assert len(with_vector["vector"]) == 256
    assert np.linalg.norm(with_vector["vector"]) == pytest.approx(1.0, abs=1e-5)

    assert call(f"{url}/accounts/{account}/speakers/alice", "DELETE").body["deleted"] == ["alice"]
    gone = call(f"{url}/accounts/{account}/speakers/alice")
    assert gone.status == 404 and "not enrolled" in gone.body["error"]
    assert call(f"{url}/accounts/{account}/speakers/alice", "DELETE").status == 404

    enroll(url, account, "bob", first_half(voices["us_male"]))
    enroll(url, account, "carol", first_half(voices["us_female"]))
    assert call(f"{url}/accounts/{account}/speakers", "DELETE").body["deleted_count"] == 2
    assert call(f"{url}/accounts/{account}/speakers").body["speakers"] == []

    events = [(e["event"], e.get("speaker")) for e in activity(activity_log(ge2e)) if e["account"] == account]
    assert events == [("enroll", "alice"), ("enroll", "alice"), ("delete", "alice"), ("enroll", "bob"),
                      ("enroll", "carol"), ("delete_all", None)]


def test_uploads_larger_than_a_frame_limit_go_through(ge2e, voices):
    """Frames are limited to 1 MiB; an enrollment WAV may be bigger (here
    26 s of float samples, 1.7 MB, in a multipart body through the balancer)."""
    samples, rate = voices["gb_male"]
    long_take = np.tile(samples.astype(np.float32) / 32768, 2)
    buf = io.BytesIO()
    sf.write(buf, long_take, rate, format="WAV", subtype="FLOAT")
    assert len(buf.getvalue()) > 1 << 20
    body, content_type = multipart("file", "long.wav", buf.getvalue())
    reply = call(f"{ge2e.url}/accounts/big/speakers/alice", "POST", body, content_type)
    assert reply.status == 201, reply.body
    assert reply.body["speech_seconds"] > 15


def test_verify_scores_every_enrolled_speaker(ge2e, voices):
    url, account = ge2e.url, "verify"
    for name, voice in voices.items():
        enroll(url, account, name, first_half(voice))
    for name, voice in voices.items():
        reply = call(f"{url}/accounts/{account}/verify", "POST", second_half(voice))
        assert reply.status == 200, reply.body
        v = reply.body
        assert set(v["scores"]) == set(voices) and v["best"] == name, v
        assert v["score"] == max(v["scores"].values()) and v["threshold"] == 0.70
        second = sorted(v["scores"].values())[-2]
        clear = v["score"] >= 0.70 and v["score"] - second >= v["margin"] == 0.08
        assert v["decision"] == (name if clear else "unknown") and v["match"] == (v["decision"] == name)
        assert v["encoder"] == "ge2e" and v["speech_seconds"] > 1.5
    verifications = [e for e in activity(activity_log(ge2e)) if e["account"] == account and e["event"] == "verify"]
    assert len(verifications) == 3
    assert all(set(e["scores"]) == set(voices) and "time" in e and "ms" in e for e in verifications)


def test_embed_and_compare(ge2e, voices):
    url, account = ge2e.url, "embed"
    enroll(url, account, "carol", first_half(voices["us_female"]))
    voiceprint = call(f"{url}/accounts/{account}/speakers/carol?vector=1").body
    embedded = call(f"{url}/embed", "POST", second_half(voices["us_female"]))
    assert embedded.status == 200, embedded.body
    e = embedded.body
    assert e["encoder"] == "ge2e" and e["dim"] == 256 and len(e["embedding"]) == 256
    assert -60 < e["db"] < 0 and e["speech_db"] >= e["db"] and 1.5 < e["speech_seconds"] <= e["seconds"]

    compared = call_json(f"{url}/compare", {"a": voiceprint, "b": e})
    assert compared.status == 200, compared.body
    verified = call(f"{url}/accounts/{account}/verify", "POST", second_half(voices["us_female"])).body
    assert compared.body["score"] == pytest.approx(verified["scores"]["carol"], abs=1e-3)
    assert call_json(f"{url}/compare", {"a": voiceprint, "b": voiceprint}).body["score"] == pytest.approx(1.0)

    other = {**e, "encoder": "ecapa"}
    mismatch = call_json(f"{url}/compare", {"a": voiceprint, "b": other})
    assert mismatch.status == 409 and "across encoders" in mismatch.body["error"]


def test_refusals_reach_the_client_through_the_balancer(ge2e, voices):
    url = ge2e.url
    for path, data, status, needle in [
        ("/accounts/acme/speakers/al~ice", first_half(voices["gb_male"]), 400, "speaker name"),
        ("/accounts/acme/speakers/alice", encode_wav(silence(5), 16000), 422, "found 0.00 s of speech"),
        ("/accounts/nobody/verify", second_half(voices["gb_male"]), 404, "no enrolled speakers"),
    ]:
        reply = call(f"{url}{path}", "POST", data)
        assert reply.status == status and needle in reply.body["error"], (path, reply)
    # Refused on its Content-Length, before a byte of the body is read.
    conn = http.client.HTTPConnection("127.0.0.1", ge2e.worker_ports[0], timeout=30)
    conn.putrequest("POST", "/accounts/acme/speakers/alice")
    conn.putheader("Content-Type", "audio/wav")
    conn.putheader("Content-Length", str(MAX_UPLOAD_BYTES + 1))
    conn.endheaders()
    too_big = conn.getresponse()
    assert too_big.status == 413 and "too large" in json.load(too_big)["error"]
    conn.close()
    through_balancer = call(f"{url}/accounts/acme/speakers/alice", "POST", b"\0" * (MAX_UPLOAD_BYTES + 1))
    assert through_balancer.status == 413
    assert call(f"{url}/accounts/acme/speakers").body["speakers"] == []  # nothing got enrolled


def test_streaming_frames_carry_the_speaker(ge2e, voices):
    account = "stream"
    enroll(ge2e.url, account, "male", first_half(voices["gb_male"]))
    enroll(ge2e.url, account, "female", first_half(voices["us_female"]))
    enroll(ge2e.url, account, "male8k", first_half(voices["us_male"]))
    female, rate = voices["us_female"]
    male, _ = voices["gb_male"]
    male8k, rate8k = voices["us_male"]
    turns = [("female", female[len(female) // 2:], rate), (None, silence(3.5), rate),
             ("male", male[len(male) // 2:], rate), (None, silence(3.5), rate),
             ("male8k", male8k[len(male8k) // 2:], rate8k)]  # 8 kHz frames: resampled for the encoder
    replies, truth = [], []
    for who, samples, samples_rate in turns:
        got = stream(ge2e, account, samples, samples_rate)
        replies += got
        truth += [who] * len(got)

    assert all("speaker" not in r for r in replies if r["voice"] == 0)
    decided = [(r, who) for r, who in zip(replies, truth, strict=True) if "speaker" in r]
    assert all(r["voice"] == 1 and isinstance(r["score"], float) for r, _ in decided)
    assert sum(r["speaker"] == who for r, who in decided) >= 0.8 * len(decided)
    # The stream's first two voiced frames carry no speaker: the tracker's
    # first window comes at 0.3 s of speech; from then on every voiced frame
    # carries one (the label holds through the pauses between turns).
    voiced_all = [i for i, r in enumerate(replies) if r["voice"] == 1]
    assert all("speaker" not in replies[i] for i in voiced_all[:2]) and "speaker" in replies[voiced_all[2]]
    assert all("speaker" in replies[i] for i in voiced_all[2:])
    for who, _, _ in turns[::2]:
        turn = [r for r, w in zip(replies, truth, strict=True) if w == who]
        voiced = [i for i, r in enumerate(turn) if r["voice"] == 1]
        # After the turn's first second of speech, the turn's speaker.
        right = sum(turn[i].get("speaker") == who for i in voiced[10:])
        assert right >= 0.8 * len(voiced[10:]), (who, [turn[i].get("speaker") for i in voiced])

    lines = ge2e.account_log(account)
    assert len(lines) == len(replies)
    parsed = [parse_line(line) for line in lines]
    assert all(parsed), [line for line, p in zip(lines, parsed, strict=True) if not p][:3]
    # Lines are in frame order: each frame is answered before the next is sent.
    for p, r in zip(parsed, replies, strict=True):
        assert p is not None and p.voice == r["voice"] and p.worker == r["worker"]
        if "speaker" in r:
            assert p.speaker == r["speaker"] and p.score == pytest.approx(r["score"], abs=0.0051)
        else:
            assert p.speaker is None


def test_streaming_decides_with_the_accounts_own_threshold(ge2e, voices):
    """Set through the balancer (routed to the account's worker), read by the
    worker that streams the account; deleted, the worker's applies again."""
    account, url = "own-threshold", ge2e.url
    enroll(url, account, "male", first_half(voices["gb_male"]))
    samples, rate = voices["gb_male"]
    unseen = samples[len(samples) // 2:]
    put = call_json(f"{url}/accounts/{account}/settings", {"threshold": 0.99}, method="PUT")
    assert put.status == 200 and put.body["threshold"] == 0.99 and put.body["threshold_source"] == "account"
    bad = call_json(f"{url}/accounts/{account}/settings", {"threshold": 2}, method="PUT")
    assert bad.status == 400 and "from -1 to 1" in bad.body["error"]
    strict = [r for r in stream(ge2e, account, unseen, rate) if "speaker" in r]
    assert strict and {r["speaker"] for r in strict} == {"unknown"}
    assert call(f"{url}/accounts/{account}/settings", "DELETE").body["threshold_source"] == "worker"
    assert call(f"{url}/accounts/{account}/settings").body["threshold"] == 0.70
    again = [r for r in stream(ge2e, account, np.concatenate((silence(3.5), unseen)), rate) if "speaker" in r]
    assert sum(r["speaker"] == "male" for r in again) >= 0.8 * len(again)


def embedded_total(system) -> int:
    return sum(call(f"{system.worker_url(i)}/health").body["speakers"]["windows_embedded"]
               for i in range(len(system.workers)))


def test_accounts_without_voiceprints_pay_nothing(ge2e, voices):
    samples, rate = voices["us_female"]
    before = embedded_total(ge2e)
    replies = stream(ge2e, "nobody-enrolled", samples[:6 * rate], rate)
    assert any(r["voice"] == 1 for r in replies)
    assert all("speaker" not in r for r in replies)
    assert embedded_total(ge2e) == before  # not one window embedded
    assert all(p is not None and p.speaker is None for p in map(parse_line, ge2e.account_log("nobody-enrolled")))


def test_concurrent_enrollments_from_all_workers(ge2e, voices):
    """Three workers write one voiceprint at the same time: no sample lost."""
    account, posts_per_worker = "concurrent", 3
    wav = first_half(voices["us_male"])
    errors: list = []

    def post(i: int) -> None:
        for _ in range(posts_per_worker):
            for name in ("shared", f"only-{i}"):
                reply = call(f"{ge2e.worker_url(i)}/accounts/{account}/speakers/{name}", "POST", wav)
                if reply.status != 201:
                    errors.append(reply)
    threads = [threading.Thread(target=post, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    speakers = {s["name"]: s for s in call(f"{ge2e.url}/accounts/{account}/speakers").body["speakers"]}
    assert speakers["shared"]["samples"] == 3 * posts_per_worker
    assert all(speakers[f"only-{i}"]["samples"] == posts_per_worker for i in range(3))


def test_voiceprints_survive_a_worker_restart(ge2e, voices):
    account = "restart"
    enroll(ge2e.url, account, "carol", first_half(voices["us_female"]))
    enroll(ge2e.url, account, "bob", first_half(voices["us_male"]))
    before = call(f"{ge2e.url}/accounts/{account}/speakers").body
    assert len(before["speakers"]) == 2
    for i in range(len(ge2e.workers)):
        ge2e.restart_worker(i)
    ge2e.wait_balancer_sees_all()
    wait_encoders(ge2e)
    for i in range(len(ge2e.workers)):
        assert call(f"{ge2e.worker_url(i)}/accounts/{account}/speakers").body == before
    verified = call(f"{ge2e.url}/accounts/{account}/verify", "POST", second_half(voices["us_male"])).body
    assert verified["best"] == "bob"
