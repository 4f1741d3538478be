"""The worker secret in process: the check of any header bytes, the option's
parse, when a worker may listen without it, and the real worker app (Flask's
test client) refusing every route but /health and /metrics before any view
runs. With real processes and the real balancer: test_auth.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
from flask import Flask
from flask.testing import FlaskClient

from voicestream.batch import CONTENT_TYPE, PATH, FrameMeta, decode_replies, encode_batch
from voicestream.wav import split_frames
from voicestream.worker_secret import Verdict, check
from voicetools.paths import REPO
from worker.app import create_app
from worker.config import WorkerConfig, exposure, insecure_warning, is_loopback, parse_args

SECRET = "s3cret-0123456789-abcdef"
OPEN = {"/health", "/metrics"}
STAMP_2000 = 946_684_800_000_000  # 2000-01-01: the forged line


@pytest.mark.parametrize("header,verdict", [
    (None, Verdict.MISSING),
    ("", Verdict.MISSING),
    ("Bearer", Verdict.MISSING),
    ("Bearer    ", Verdict.MISSING),
    (f"Basic {SECRET}", Verdict.MISSING),
    (SECRET, Verdict.MISSING),
    ("Bearer wrong", Verdict.WRONG),
    (f"Bearer {SECRET}x", Verdict.WRONG),
    (f"Bearer {SECRET[:-1]}", Verdict.WRONG),
    ("Bearer \xff\xfe", Verdict.WRONG),  # non-UTF-8 bytes, as a WSGI server hands them over (Latin-1)
    ("Bearer \udcff\ud800", Verdict.WRONG),  # lone surrogates, as a UTF-8 decoder leaves them
    ("\xff Bearer", Verdict.MISSING),
    (f"Bearer {SECRET}", Verdict.ACCEPTED),
    (f"bearer  {SECRET} ", Verdict.ACCEPTED),
])
def test_any_header_gets_a_verdict_never_an_error(header: str | None, verdict: Verdict) -> None:
    assert check(header, SECRET) is verdict


def test_without_a_secret_nothing_is_required() -> None:
    assert check(None, "") is check("Bearer anything", "") is Verdict.NOT_REQUIRED


@pytest.mark.parametrize("value", ["short-secret", "x" * 15, "with a space in it 0123", "ünïcödé-secret-0123456"])
def test_a_weak_or_unsendable_secret_stops_the_worker_without_showing_it(value: str,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    for argv, environ in ((["--worker-secret", value], {}), ([], {"WORKER_SECRET": value})):
        with pytest.raises(SystemExit) as stopped:
            parse_args(argv, environ)
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert "a worker secret is 16 or more visible ASCII characters" in err and value not in err
        if environ:
            assert "environment variable WORKER_SECRET" in err


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.0.9", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST.", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False), ("192.168.1.20", False),
    ("worker1", False), ("localhost.example.com", False),
])
def test_loopback_is_localhost_127_8_and_ipv6_1(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_beyond_loopback_a_worker_needs_the_secret_or_insecure() -> None:
    assert exposure(WorkerConfig()) is None  # 127.0.0.1: the quick start, unchanged
    assert exposure(WorkerConfig(host="127.0.0.2")) is None
    refused = exposure(WorkerConfig(host="0.0.0.0", port=7005))
    assert refused is not None and "\n" not in refused
    assert refused.startswith("refusing to listen on 0.0.0.0 without a worker secret")
    assert "port 7005" in refused and "WORKER_SECRET" in refused and "--insecure" in refused
    assert exposure(WorkerConfig(host="0.0.0.0", worker_secret=SECRET)) is None
    assert insecure_warning(WorkerConfig(host="0.0.0.0", worker_secret=SECRET, insecure=True)) is None
    insecure = WorkerConfig(host="0.0.0.0", insecure=True)
    assert exposure(insecure) is None
    assert (insecure_warning(insecure) or "").startswith("WARNING: listening on 0.0.0.0:7001 without a worker secret")
    assert insecure_warning(WorkerConfig(insecure=True)) is None  # on loopback nothing is exposed


@pytest.mark.parametrize("argv,environ,insecure", [
    ([], {}, False), (["--insecure"], {}, True), ([], {"WORKER_INSECURE": "1"}, True),
    ([], {"WORKER_INSECURE": "yes"}, True), ([], {"WORKER_INSECURE": "0"}, False),
    ([], {"WORKER_INSECURE": ""}, False), (["--insecure"], {"WORKER_INSECURE": "0"}, True),
])
def test_insecure_is_a_switch_from_the_flag_alone_or_its_variable(argv: list[str], environ: dict[str, str],
                                                                  insecure: bool) -> None:
    assert parse_args(argv, environ).insecure is insecure


def test_a_bad_insecure_value_stops_the_worker(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([], {"WORKER_INSECURE": "maybe"})
    assert "environment variable WORKER_INSECURE is not valid for --insecure" in capsys.readouterr().err


# --- the worker app ------------------------------------------------------------

@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(WorkerConfig(encoder="none", log_dir=str(tmp_path / "logs"),
                                   store_path=str(tmp_path / "voiceprints.db"),
                                   activity_log=str(tmp_path / "activity.log"), worker_secret=SECRET))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def frames_body(account: str, n: int = 3) -> bytes:
    samples, rate = sf.read(REPO / "data" / "us_female_16k.wav", dtype="int16")
    wavs = split_frames(samples[:rate], rate)[:n]
    return encode_batch([(FrameMeta(account, "forged", i + 1, STAMP_2000 + i), wav) for i, wav in enumerate(wavs)])


def every_guarded_call(app: Flask) -> list[tuple[str, str]]:
    """(method, path) of every route the app has but /health and /metrics,
    its arguments filled in: a route added later is guarded too."""
    calls = []
    for rule in app.url_map.iter_rules():
        if rule.rule in OPEN:
            continue
        path = rule.rule
        for argument in rule.arguments:
            path = path.replace(f"<{argument}>", "acme").replace(f"<path:{argument}>", "acme")
        calls += [(method, path) for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})]
    return calls


@pytest.mark.parametrize("headers,verdict", [
    ({}, "missing"), ({"Authorization": f"Basic {SECRET}"}, "missing"), ({"Authorization": "Bearer wrong"}, "wrong"),
    ({"Authorization": "Bearer \xff\xfe"}, "wrong"),
], ids=["none", "not-bearer", "wrong", "not-utf8"])
def test_every_route_but_health_and_metrics_refuses_a_call_without_the_secret(app: Flask, client: FlaskClient,
                                                                             tmp_path: Path, headers: dict,
                                                                             verdict: str) -> None:
    calls = every_guarded_call(app)
    assert {("POST", PATH), ("POST", "/streams/close"), ("POST", "/drain"), ("DELETE", "/accounts/acme/speakers"),
            ("POST", "/accounts/acme/speakers/acme"), ("GET", "/accounts/acme/segments")} <= set(calls)
    for method, path in [*calls, ("GET", "/no/such/path")]:
        reply = client.open(path, method=method, headers=headers, data=frames_body("acme"), content_type=CONTENT_TYPE)
        assert reply.status_code == 401, (method, path, reply.get_json())
        error = reply.get_json()["error"]
        assert error.startswith(f"{verdict} worker secret: only a balancer may call this worker"), error
        assert "Authorization: Bearer <secret>" in error and "WORKER_SECRET" in error
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    logs = tmp_path / "logs"
    assert not logs.exists() or not any(logs.iterdir()), "a refused batch logged a line"
    health = client.get("/health", headers=headers).get_json()
    assert health["status"] == "ok" and health["frames"] == 0 and health["accounts"] == 0  # not drained, nothing seen


def test_health_and_metrics_answer_anyone_and_health_judges_the_caller(client: FlaskClient) -> None:
    assert client.get("/metrics").status_code == 200
    verdicts = {name: client.get("/health", headers=headers).get_json()["worker_secret"]
                for name, headers in (("none", {}), ("wrong", {"Authorization": "Bearer x"}),
                                      ("right", {"Authorization": f"Bearer {SECRET}"}))}
    assert verdicts == {"none": "missing", "wrong": "wrong", "right": "accepted"}


def test_with_the_secret_a_batch_is_processed_and_logged(client: FlaskClient, tmp_path: Path) -> None:
    reply = client.post(PATH, data=frames_body("acme"), content_type=CONTENT_TYPE,
                        headers={"Authorization": f"Bearer {SECRET}"})
    assert reply.status_code == 200
    assert [status for status, _ in decode_replies(reply.get_json(), 3)] == [200, 200, 200]
    assert len((tmp_path / "logs" / "acme.txt").read_text().splitlines()) == 3
