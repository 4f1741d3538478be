"""GET /metrics of the balancer (aiohttp test server, fake workers) and of a
worker (Flask's test client), in process: after known traffic every counter
and histogram count has its exact value, the text parses as Prometheus text,
no label value is an account code or a stream id, and every metric the
Grafana dashboard queries is one the services expose."""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from balancer.routing import rank_workers
from balancer_fakes import FakeWorker, balancer, closed_port_url, fake_workers
from speaker_helpers import MODELS, ge2e_graph
from voicestream.batch import CONTENT_TYPE, PATH, FrameMeta, decode_replies, encode_batch, encode_replies
from voicestream.wav import encode_wav, split_frames
from voicetools.cluster import free_port
from voicetools.paths import REPO
from worker.app import create_app
from worker.config import WorkerConfig
from worker.context import EXTENSION, Worker
from worker.speakers.windows import (
    FIRST_WINDOW_SECONDS,
    PAUSE_SECONDS,
    SURE_STEP_SECONDS,
    WINDOW_SECONDS,
    WINDOW_STEP_SECONDS,
)

ACCOUNT = "ACME4242"  # must never show up in a label
TOKEN = "s3cret-token"
FRAME = encode_wav([0, 100, -100, 0] * 400, 16000)  # 0.1 s
STAMP = 1_674_222_284_123_435
DATA = REPO / "data"
DEPLOY = REPO / "deploy"
# Every label name the services use: each has a bounded set of values.
LABEL_NAMES = {"outcome", "reason", "worker", "le", "decision", "mode"}
STREAM_ID = re.compile(r"(http-)?[0-9a-f]{32}")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a /metrics text, by name and labels. The parser
    raises on anything that is not the text format."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"{key} twice"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def check_labels(samples: Samples, *private: str) -> None:
    """Bounded label sets: known label names, and no value that names an
    account, a speaker or a stream."""
    for name, labels in samples:
        for label, text in labels:
            assert label in LABEL_NAMES, (name, label)
            assert not any(word in text for word in private), (name, label, text)
            assert not STREAM_ID.fullmatch(text), (name, label, text)


# --- the balancer -----------------------------------------------------------


@dataclass(eq=False)
class RepeatingWorker(FakeWorker):
    """A fake worker that, while `repeat` is set, answers each frame as a
    retry of one it already processed (the real worker's "duplicate")."""
    repeat: bool = False

    async def _frames(self, request: web.Request) -> web.Response:
        response = await super()._frames(request)
        if not self.repeat:
            return response
        assert isinstance(response.body, bytes)
        answer = json.loads(response.body)
        replies = [{**reply, "duplicate": True} for reply in answer["replies"]]
        return web.Response(text=encode_replies(answer["statuses"], replies), content_type="application/json")


@asynccontextmanager
async def repeating_workers(n: int) -> AsyncIterator[list[RepeatingWorker]]:
    workers = [await RepeatingWorker().start() for _ in range(n)]
    try:
        yield workers
    finally:
        for worker in workers:
            await worker.close()


def first_choice(workers: list[RepeatingWorker], account: str) -> RepeatingWorker:
    url = rank_workers(account, [w.url for w in workers])[0]
    return next(w for w in workers if w.url == url)


async def scrape(client: TestClient, **headers: str) -> tuple[Samples, str]:
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    return parse(text), text


async def frames(client: TestClient, count: int, *parts: str | bytes) -> list[dict[str, Any]]:
    """count frames of ACCOUNT on one WebSocket (after any parts); their replies."""
    async with client.ws_connect(f"/ws?token={TOKEN}") as ws:
        for part in parts:
            await (ws.send_str(part) if isinstance(part, str) else ws.send_bytes(part))
        for _ in range(count):
            await ws.send_str(f"ACCOUNTCODE={ACCOUNT}")
            await ws.send_bytes(FRAME)
        return [await ws.receive_json(timeout=10) for _ in range(count + len(parts))]


def test_the_balancer_counts_every_frame_by_outcome_and_times_it():
    async def go() -> tuple[Samples, list[str], str]:
        async with repeating_workers(2) as workers, balancer(workers, token=TOKEN) as client:
            worker = first_choice(workers, ACCOUNT)
            assert all("error" not in r for r in await frames(client, 5))
            worker.refuse = "not a WAV file"
            assert [r["error"] for r in await frames(client, 1)] == ["not a WAV file"]
            worker.refuse, worker.repeat = None, True
            assert [r.get("duplicate") for r in await frames(client, 2)] == [True, True]
            # A binary part without its text part: the balancer refuses it.
            [refused] = await frames(client, 0, FRAME)
            assert "binary part without a text part" in refused["error"]
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            assert (await client.post("/", data=b"not json", headers=bearer)).status == 400
            assert (await client.get("/")).status == 401  # no token; /metrics needs none
            samples, text = await scrape(client)
            return samples, [w.url for w in workers], text
    samples, urls, text = asyncio.run(go())
    check_labels(samples, ACCOUNT)
    assert value(samples, "voicestream_balancer_frames_received_total") == 8
    answered = {outcome: value(samples, "voicestream_balancer_frames_answered_total", outcome=outcome)
                for outcome in ("ok", "duplicate", "refused", "worker_error", "unreadable", "no_worker")}
    assert answered == {"ok": 5, "duplicate": 2, "refused": 1, "worker_error": 0, "unreadable": 0, "no_worker": 0}
    rejected = {reason: value(samples, "voicestream_balancer_rejected_total", reason=reason)
                for reason in ("invalid", "unauthorized", "too_many_clients", "too_many_from_address", "internal",
                               "message_timeout", "idle_timeout")}
    assert rejected == {"invalid": 2, "unauthorized": 1, "too_many_clients": 0, "too_many_from_address": 0,
                        "internal": 0, "message_timeout": 0, "idle_timeout": 0}
    assert value(samples, "voicestream_balancer_frame_seconds_count") == 8
    assert value(samples, "voicestream_balancer_frame_seconds_bucket", le="+Inf") == 8
    first = rank_workers(ACCOUNT, urls)[0]
    assert {url: value(samples, "voicestream_balancer_forward_seconds_count", worker=url) for url in urls} == {
        url: (8 if url == first else 0) for url in urls}
    for url in urls:
        assert value(samples, "voicestream_balancer_worker_up", worker=url) == 1
        assert value(samples, "voicestream_balancer_worker_exits_total", worker=url) == 0
        assert value(samples, "voicestream_balancer_forward_failures_total", worker=url, reason="timeout") == 0
    assert value(samples, "voicestream_balancer_retries_total") == 0
    assert value(samples, "voicestream_balancer_reroutes_total") == 0
    assert ACCOUNT not in text


def test_the_balancer_counts_failed_attempts_retries_and_reroutes():
    async def go() -> tuple[Samples, str, str]:
        async with repeating_workers(2) as workers, balancer(workers) as client:
            down = first_choice(workers, ACCOUNT)
            other = next(w for w in workers if w is not down)
            down.frames_error = (503, "application/json", '{"error": "worker is shutting down"}')
            # The first frame fails at its first choice and goes to the next
            # one; the second goes there at once: its first choice is out of the ring.
            assert [r["worker"] for r in await frames(client, 2)] == [other.port] * 2
            samples, _ = await scrape(client)
            return samples, down.url, other.url
    samples, down, other = asyncio.run(go())
    check_labels(samples, ACCOUNT)
    assert value(samples, "voicestream_balancer_forward_failures_total", worker=down, reason="unavailable") == 1
    assert value(samples, "voicestream_balancer_retries_total") == 1
    assert value(samples, "voicestream_balancer_reroutes_total") == 2
    assert value(samples, "voicestream_balancer_worker_up", worker=down) == 0
    assert value(samples, "voicestream_balancer_worker_up", worker=other) == 1
    assert value(samples, "voicestream_balancer_worker_exits_total", worker=down) == 1
    assert value(samples, "voicestream_balancer_forward_seconds_count", worker=down) == 1  # its 503
    assert value(samples, "voicestream_balancer_forward_seconds_count", worker=other) == 2
    assert value(samples, "voicestream_balancer_frames_answered_total", outcome="ok") == 2


def test_the_balancer_shows_connections_and_answers_metrics_past_the_connection_limit():
    async def go() -> tuple[Samples, Samples, int]:
        async with fake_workers(1) as (worker,), balancer([worker], max_connections=1) as client:
            async with client.ws_connect("/ws") as ws:
                await ws.send_str(f"ACCOUNTCODE={ACCOUNT}")
                await ws.send_bytes(FRAME)
                await ws.receive_json(timeout=10)
                refused = (await client.get("/")).status  # the limit is taken by the WebSocket
                during, _ = await scrape(client)
            after, _ = await scrape(client)
            for _ in range(500):  # the server's handler ends its side of the closed socket soon after
                if value(after, "voicestream_balancer_websocket_connections") == 0:
                    break
                await asyncio.sleep(0.01)
                after, _ = await scrape(client)
            return during, after, refused
    during, after, refused = asyncio.run(go())
    assert refused == 429
    assert value(during, "voicestream_balancer_websocket_connections") == 1
    assert value(during, "voicestream_balancer_clients") == 1
    assert value(during, "voicestream_balancer_max_clients") == 1
    assert value(during, "voicestream_balancer_rejected_total", reason="too_many_clients") == 1
    assert value(after, "voicestream_balancer_websocket_connections") == 0
    assert value(after, "voicestream_balancer_frames_in_flight") == 0


def test_with_no_worker_up_a_frame_is_answered_no_worker():
    async def go() -> Samples:
        async with balancer([closed_port_url()]) as client:
            body = {"ACCOUNTCODE": ACCOUNT, "data": [0] * 800, "sample_rate": 8000}
            assert (await client.post("/", json=body)).status == 503
            return (await scrape(client))[0]
    samples = asyncio.run(go())
    assert value(samples, "voicestream_balancer_frames_received_total") == 1
    assert value(samples, "voicestream_balancer_frames_answered_total", outcome="no_worker") == 1
    assert value(samples, "voicestream_balancer_retries_total") == 0


# --- a worker ---------------------------------------------------------------


def worker_config(root: Path, **options: Any) -> WorkerConfig:
    return WorkerConfig(**{"port": 7301, "encoder": "none", "log_dir": str(root / "logs"),
                           "store_path": str(root / "voiceprints.db"), "activity_log": str(root / "activity.log"),
                           **options})


def post_frames(client: FlaskClient, frames: list[tuple[FrameMeta, bytes]],
                status: int = 200) -> list[tuple[int, dict]]:
    """Each frame's (status, reply); none for a batch refused whole."""
    reply = client.post(PATH, data=encode_batch(frames), content_type=CONTENT_TYPE)
    assert reply.status_code == status, reply.get_json()
    return decode_replies(reply.get_json(), len(frames)) if status == 200 else []


def worker_scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return parse(response.get_data(as_text=True))


def speech(name: str, start: float = 0.0, seconds: float = 2.0) -> list[bytes]:
    samples, rate = sf.read(DATA / name, dtype="int16")
    return split_frames(samples[int(start * rate):int((start + seconds) * rate)], rate)


def test_a_worker_counts_frames_batches_and_model_calls(tmp_path: Path):
    app = create_app(worker_config(tmp_path))
    worker: Worker = app.extensions[EXTENSION]
    audio = speech("us_female_16k.wav", seconds=0.5)
    batch = [(FrameMeta(ACCOUNT, "s1", i + 1, STAMP + i), wav) for i, wav in enumerate(audio)]
    with app.test_client() as client:
        answered = post_frames(client, [*batch, (FrameMeta(ACCOUNT, "s1", 9, STAMP + 9), b"not a WAV")])
        assert [status for status, _ in answered] == [200] * 5 + [400]
        [(_, again)] = post_frames(client, batch[-1:])  # a retry of the last frame
        assert again["duplicate"] is True
        assert client.post(PATH, data=b"not a batch", content_type=CONTENT_TYPE).status_code == 400
        worker.draining.set()
        post_frames(client, batch[:1], 503)
        draining = worker_scrape(client)
        worker.draining.clear()
        samples = worker_scrape(client)
    check_labels(samples, ACCOUNT)
    assert {o: value(samples, "voicestream_worker_frames_total", outcome=o) for o in ("ok", "duplicate", "invalid")} \
        == {"ok": 5, "duplicate": 1, "invalid": 1}
    assert value(samples, "voicestream_worker_batches_rejected_total", reason="malformed") == 1
    assert value(samples, "voicestream_worker_batches_rejected_total", reason="draining") == 1
    assert value(samples, "voicestream_worker_batch_frames_count") == 2
    assert value(samples, "voicestream_worker_batch_frames_sum") == 7
    assert value(samples, "voicestream_worker_batch_frames_bucket", le="4.0") == 1  # the retry alone
    assert value(samples, "voicestream_worker_batch_frames_bucket", le="8.0") == 2
    assert value(samples, "voicestream_worker_batch_seconds_count") == 2
    # One VAD call per frame of the account (its frames run in order); the
    # retry is answered from memory, with no model call.
    assert value(samples, "voicestream_worker_vad_seconds_count") == 5
    assert value(samples, "voicestream_worker_accounts") == 1
    assert (value(draining, "voicestream_worker_draining"), value(samples, "voicestream_worker_draining")) == (1, 0)
    assert value(samples, "voicestream_worker_database_info", mode="embedded") == 1
    assert not any(name.startswith("voicestream_worker_database_up") for name, _ in samples)
    # --encoder none: no speaker tracking to count.
    assert not any(name.startswith("voicestream_worker_speaker_") for name, _ in samples)


@pytest.fixture
def unreachable_database(tmp_path: Path) -> Iterator[Flask]:
    """A worker whose --database nothing listens on: rows go to a 3-row spool."""
    url = f"postgresql://voicestream@127.0.0.1:{free_port()}/voicestream"
    app = create_app(worker_config(tmp_path, database=url, spool_dir=str(tmp_path / "spool"), spool_max_rows=3,
                                   database_timeout=0.5))
    worker: Worker = app.extensions[EXTENSION]
    assert worker.storage.health()["mode"] == "postgresql"
    try:
        yield app
    finally:
        worker.storage.close()


def test_a_worker_with_its_database_down_shows_the_spool(unreachable_database: Flask):
    audio = speech("us_female_16k.wav", seconds=0.5)
    with unreachable_database.test_client() as client:
        answered = post_frames(client, [(FrameMeta(ACCOUNT, "s1", i + 1, STAMP + i), wav)
                                        for i, wav in enumerate(audio)])
        assert all(status == 200 and "error" not in r for status, r in answered)
        samples = worker_scrape(client)
    check_labels(samples, ACCOUNT)
    assert value(samples, "voicestream_worker_database_info", mode="postgresql") == 1
    assert value(samples, "voicestream_worker_database_up") == 0
    assert value(samples, "voicestream_worker_spooled_rows") == 3
    assert value(samples, "voicestream_worker_dropped_rows_total") == 2
    assert value(samples, "voicestream_worker_spooled_finals") == 0  # --encoder none: no segments
    assert value(samples, "voicestream_worker_dropped_finals_total") == 0


@pytest.fixture(scope="module")
def ge2e_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """GE2E with the worker's defaults: a window scored every 0.2 s of a run of speech."""
    ge2e_graph()
    root = tmp_path_factory.mktemp("metrics-ge2e")
    app = create_app(worker_config(root, encoder="ge2e", model_dir=str(MODELS)))
    engine = app.extensions[EXTENSION].speakers.engine
    assert engine is not None and engine.wait_loaded(300) and engine.ready, engine.status()
    return app


def windows_of(voices: list[int], sure: bool = False) -> int:
    """How many windows the tracker scores for 100 ms frames with these voice
    decisions: from 0.3 s of a run of speech on, every 0.2 s, or (sure) every
    SURE_STEP_SECONDS once the run holds a full second."""
    frames = {name: round(seconds / 0.1) for name, seconds in (
        ("first", FIRST_WINDOW_SECONDS), ("step", WINDOW_STEP_SECONDS), ("sure", SURE_STEP_SECONDS),
        ("full", WINDOW_SECONDS), ("pause", PAUSE_SECONDS))}
    count = run = silence = last = 0
    for voice in voices:
        if not voice:
            silence += 1
            continue
        if silence >= frames["pause"]:
            run = last = 0
        silence, run = 0, run + 1
        step = frames["sure"] if sure and run >= frames["full"] else frames["step"]
        if run >= frames["first"] and (not last or run - last >= step):
            count, last = count + 1, run
    return count


def test_a_worker_counts_speaker_decisions_enrollments_and_verifications(ge2e_app: Flask):
    enrollment = encode_wav(sf.read(DATA / "gb_male_16k.wav", dtype="int16")[0][:6 * 16000], 16000)
    streamed = speech("gb_male_16k.wav", 7, 4) + speech("us_female_16k.wav", 0, 4)
    with ge2e_app.test_client() as client:
        assert client.post(f"/accounts/{ACCOUNT}/speakers/alice", data=enrollment,
                           content_type="audio/wav").status_code == 201
        silent = encode_wav([0] * 16000 * 4, 16000)
        assert client.post(f"/accounts/{ACCOUNT}/speakers/alice", data=silent,
                           content_type="audio/wav").status_code == 422  # no speech: not an enrollment
        verified = client.post(f"/accounts/{ACCOUNT}/verify", data=enrollment, content_type="audio/wav").get_json()
        replies: list[dict] = []
        for start in range(0, len(streamed), 10):
            replies += [reply for _, reply in post_frames(
                client, [(FrameMeta(ACCOUNT, "s1", i + 1, STAMP + i), streamed[i])
                         for i in range(start, min(start + 10, len(streamed)))])]
        samples = worker_scrape(client)
    check_labels(samples, ACCOUNT, "alice")
    assert value(samples, "voicestream_worker_enrollments_total") == 1
    assert value(samples, "voicestream_worker_verifications_total", decision="known" if verified["match"]
                 else "unknown") == 1
    assert sum(value(samples, "voicestream_worker_verifications_total", decision=d) for d in ("known", "unknown")) == 1
    # A decision per scored window: the tracker's cadence (worker/speakers/
    # windows.py: at 0.3 s of a run of speech, then every 0.2 s; a pause of
    # 0.3 s starts a new run), counted from the replies' voice.
    # A sure decision takes a window every SURE_STEP_SECONDS instead: between the two counts.
    most = windows_of([r["voice"] for r in replies])
    least = windows_of([r["voice"] for r in replies], sure=True)
    decisions = sum(value(samples, "voicestream_worker_speaker_decisions_total", decision=d)
                    for d in ("known", "unknown"))
    assert 10 < least <= decisions <= most
    windows = decisions
    assert value(samples, "voicestream_worker_speaker_decisions_total", decision="known") > 0
    speakers = [r["speaker"] for r in replies if "speaker" in r]
    assert {s for s in speakers if s != "unknown"} == {"alice"}
    # Frames of one account go one at a time: one embedding call per window.
    assert value(samples, "voicestream_worker_speaker_embedding_seconds_count") == windows
    assert value(samples, "voicestream_worker_speaker_embedding_failures_total") == 0


# --- deploy/ ----------------------------------------------------------------

# PromQL words that are not metric names: aggregations, functions (also
# recognised by the "(" after them), keywords.
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        before, after = expr[:match.start()], expr[match.end():]
        if re.search(r"[0-9.]$", before) or after.lstrip().startswith("(") or match.group().lower() in PROMQL_WORDS:
            continue  # a number's exponent or unit, a function or aggregation, a keyword
        names.add(match.group())
    return names


def test_promql_metric_names_finds_names_and_only_names():
    expr = ('histogram_quantile(0.99, sum by (le, worker) (rate(a_seconds_bucket{job="x", q=~"y(z)"}[5m]))) '
            '/ ignoring (worker) b_total offset 1h > 1e3 and on (instance) c')
    assert promql_metric_names(expr) == {"a_seconds_bucket", "b_total", "c"}


def test_every_metric_the_dashboard_queries_is_exposed(ge2e_app: Flask, unreachable_database: Flask):
    async def balancer_text() -> str:
        async with fake_workers(1) as workers, balancer(workers) as client:
            return (await scrape(client))[1]
    exposed = set(name for name, _ in parse(asyncio.run(balancer_text())))
    for app in (ge2e_app, unreachable_database):
        with app.test_client() as client:
            exposed |= {name for name, _ in worker_scrape(client)}
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            queried |= promql_metric_names(target["expr"])
    assert len(queried) >= 20
    assert queried <= exposed, sorted(queried - exposed)
    # ...and every metric the services expose is on the dashboard.
    families, shown = ({re.sub(r"_(bucket|count|sum|created|total)$", "", name) for name in names}
                       for names in (exposed, queried))
    assert families <= shown, sorted(families - shown)


def test_prometheus_scrapes_every_balancer_and_worker_of_the_compose_file():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    targets = {job["job_name"]: {t for config in job["static_configs"] for t in config["targets"]} for job in scrape}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in scrape)

    def port(command: list[str]) -> str:
        return command[command.index("--port") + 1]
    assert targets == {
        f"voicestream-{tier}": {f"{name}:{port(service['command'])}" for name, service in compose.items()
                                if service.get("command", [None, None, None])[2:3] == [tier]}
        for tier in ("balancer", "worker")}
