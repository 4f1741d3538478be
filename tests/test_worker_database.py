"""A worker with --database, in process (Flask's test client) against a real
PostgreSQL: every frame's row stored once, the local log still written, the
database's state on /health; an unreachable database spools; a malformed URL
stops the worker at start."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import soundfile as sf
from flask import Flask
from flask.testing import FlaskClient

from voicestream.batch import CONTENT_TYPE, PATH, FrameMeta, encode_batch
from voicestream.logline import parse_line
from voicestream.wav import split_frames
from voicetools.cluster import free_port, wait_until
from voicetools.paths import REPO
from worker.app import create_app
from worker.config import WorkerConfig, parse_args
from worker.context import EXTENSION, Worker

pytest_plugins = ["pg"]
pytestmark = pytest.mark.integration  # a real PostgreSQL server

PORT = 7201
STAMP = 1_674_222_284_123_435


def make_app(tmp_path: Path, url: str) -> Flask:
    return create_app(WorkerConfig(port=PORT, encoder="none", log_dir=str(tmp_path / "logs"),
                                   database=url, spool_dir=str(tmp_path / "spool"), database_timeout=0.5))


@pytest.fixture
def client(tmp_path: Path, pg_url: str) -> Iterator[FlaskClient]:
    app = make_app(tmp_path, pg_url)
    try:
        with app.test_client() as client:
            yield client
    finally:
        worker: Worker = app.extensions[EXTENSION]
        assert worker.storage.health()["mode"] == "postgresql"
        worker.storage.close()


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    samples, rate = sf.read(REPO / "data" / "us_female_16k.wav", dtype="int16")
    return split_frames(samples[:rate], rate)


def post(client: FlaskClient, account: str, stream: str, frames: list[bytes], first_seq: int = 1) -> list[dict]:
    body = encode_batch([(FrameMeta(account, stream, first_seq + i, STAMP + first_seq + i), wav)
                         for i, wav in enumerate(frames)])
    reply = client.post(PATH, data=body, content_type=CONTENT_TYPE)
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()["replies"]


def rows(url: str, account: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT stream, seq, stamp, voice, worker FROM frames WHERE account = %s ORDER BY seq",
                            (account,)).fetchall()


def test_every_frame_is_one_row_and_a_retry_adds_none(client: FlaskClient, pg_url: str, tmp_path: Path,
                                                      frames: list[bytes]):
    replies = post(client, "acme", "conn-1", frames)
    stored = rows(pg_url, "acme")
    assert [(r[0], r[1], r[2]) for r in stored] == [("conn-1", i + 1, STAMP + i + 1) for i in range(len(frames))]
    assert [r[3] for r in stored] == [reply["voice"] for reply in replies]
    assert {r[4] for r in stored} == {PORT}

    # The same frames again (a retry): answered as duplicates, no new row.
    again = post(client, "acme", "conn-1", frames[-1:], first_seq=len(frames))
    assert again[0]["duplicate"] is True
    # Another connection's frames under the same stamps stay apart.
    post(client, "acme", "conn-2", frames[:2])
    assert len(rows(pg_url, "acme")) == len(frames) + 2

    # This host's file, as before: one line per stamp (conn-2's frames reuse
    # conn-1's stamps, which only two balancer replicas in one microsecond
    # could do; the file cannot tell them apart, the database does).
    lines = (tmp_path / "logs" / "acme.txt").read_text().splitlines()
    assert len(lines) == len(frames) and all(parse_line(line) for line in lines)
    health = client.get("/health").get_json()
    assert health["database"] == {"mode": "postgresql", "state": "up", "spooled": 0, "dropped": 0,
                                  "spooled_finals": 0, "dropped_finals": 0}


def test_an_unreachable_database_does_not_stop_the_worker(tmp_path: Path, own_pg, frames: list[bytes]):
    own_pg.server.stop("immediate")
    app = make_app(tmp_path, own_pg.url)
    worker: Worker = app.extensions[EXTENSION]
    assert worker.storage.health()["mode"] == "postgresql"
    try:
        with app.test_client() as client:
            replies = post(client, "acme", "conn-1", frames)
            assert all("error" not in r for r in replies)
            health = client.get("/health").get_json()["database"]
            assert health["state"] == "down" and health["spooled"] == len(frames), health
            own_pg.server.start()
            wait_until(lambda: client.get("/health").get_json()["database"]["spooled"] == 0, 30,
                       "the spooled rows to reach PostgreSQL")
        assert len(rows(own_pg.url, "acme")) == len(frames)
    finally:
        worker.storage.close()


@pytest.mark.parametrize("url, problem", [
    ("mysql://db/voices", "postgresql://"),
    ("postgresql://db:notaport/voices", "port"),
])
def test_a_malformed_url_stops_the_worker_with_the_problem(url: str, problem: str,
                                                           capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--database", url])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "--database" in err and problem in err, err


def test_a_malformed_url_from_the_environment_stops_a_real_worker(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "worker", "--port", str(free_port()), "--encoder", "none"],
                          cwd=REPO, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                                         "DATABASE_URL": "postgresql://me:hunter2pw@db:notaport/voices"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "DATABASE_URL" in done.stderr and "port" in done.stderr
    assert "hunter2pw" not in done.stderr, "the message must not show the password"


def test_embedded_workers_never_load_psycopg(tmp_path: Path):
    code = ("import sys; from worker.app import create_app; from worker.config import WorkerConfig; "
            f"create_app(WorkerConfig(encoder='none', log_dir={str(tmp_path)!r})); "
            "print('psycopg' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_health_says_embedded_without_a_database(tmp_path: Path):
    app = create_app(WorkerConfig(encoder="none", log_dir=str(tmp_path / "logs")))
    with app.test_client() as client:
        assert client.get("/health").get_json()["database"] == {"mode": "embedded"}
