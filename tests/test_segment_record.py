"""The account's record of final labels agrees with the segment events: an
in-process GE2E worker with --database (Flask's test client, a real
PostgreSQL) streams a real two-speaker conversation (../shared/data/
conversation/sample.wav, its two speakers enrolled from it) and CLOSEs; then
every frame's row holds exactly the final label of the segment event that
covers it, the segments file and the segments table list exactly the segment
events, GET /accounts/<code>/segments returns them (from PostgreSQL, and from
the file on a worker without --database), and voicestream-tail --final and
--segments print them. Then the database stops in the middle of the
conversation: the labels wait in the spool and, once it is back, the rows and
segments agree with the events all the same."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql

from speaker_helpers import ready_app, real_conversation, worker_config
from voicestream.batch import CLOSE_PATH, CONTENT_TYPE, PATH, FrameMeta, decode_replies, encode_batch, encode_close
from voicestream.events import Segment
from voicestream.logline import format_line, parse_line
from voicestream.segments import format_segment
from voicestream.stamps import stamp_time, text_stamp
from voicestream.wav import encode_wav, split_frames
from voicetools.cluster import wait_until
from voicetools.paths import REPO
from voicetools.postgres import PostgresServer
from worker.app import create_app
from worker.context import EXTENSION, Worker

pytest_plugins = ["pg"]  # pg_server, own_pg
pytestmark = pytest.mark.integration  # a PostgreSQL server process, the tail command

ACCOUNT = "convo"
STREAM = "conn-1"
PORT = 7301
T0 = 1_674_222_284_100_000  # the first frame's stamp; one frame every 100 ms
TAIL = [sys.executable, "-m", "voicetools.tail"]


@dataclass(frozen=True)
class Conversation:
    frames: list[bytes]          # 100 ms WAV frames, in order
    enroll: dict[str, bytes]     # speaker -> a WAV of their longest turn


@pytest.fixture(scope="module")
def conversation() -> Conversation:
    samples, rate, turns = real_conversation()
    enroll = {}
    for name in sorted({speaker for speaker, _, _ in turns}):
        start, end = max(((start, end) for speaker, start, end in turns if speaker == name), key=lambda t: t[1] - t[0])
        enroll[name] = encode_wav(samples[int(start * rate):int(end * rate)], rate)
    return Conversation(split_frames(samples, rate), enroll)


def database_app(root: Path, url: str) -> Flask:
    """A GE2E worker with --database url, its encoder loaded."""
    return ready_app(worker_config(root, "ge2e", port=PORT, database=url, spool_dir=str(root / "spool"),
                                   database_timeout=0.5))


def close_storage(app: Flask) -> None:
    worker: Worker = app.extensions[EXTENSION]
    worker.storage.close()


def enroll(client: FlaskClient, conversation: Conversation) -> None:
    for name, wav in conversation.enroll.items():
        reply = client.post(f"/accounts/{ACCOUNT}/speakers/{name}", data=wav, content_type="audio/wav")
        assert reply.status_code == 201, reply.get_json()


def send(client: FlaskClient, frames: list[bytes], first_seq: int) -> list[dict]:
    """Frames one batch each, as the balancer sends a stream's; their replies."""
    replies = []
    for i, wav in enumerate(frames):
        seq = first_seq + i
        body = encode_batch([(FrameMeta(ACCOUNT, STREAM, seq, T0 + (seq - 1) * 100_000), wav)])
        answer = client.post(PATH, data=body, content_type=CONTENT_TYPE)
        assert answer.status_code == 200, answer.data[:300]
        [(status, reply)] = decode_replies(json.loads(answer.data), 1)
        assert status == 200 and "error" not in reply, reply
        replies.append(reply)
    return replies


def close(client: FlaskClient) -> list[dict]:
    answer = client.post(CLOSE_PATH, data=encode_close(ACCOUNT, STREAM))
    assert answer.status_code == 200
    return answer.get_json()["events"]


def segment_events(replies: list[dict], closed: list[dict]) -> list[Segment]:
    events = [event for reply in replies for event in reply.get("events", [])] + closed
    return [event for event in events if event["type"] == "segment"]


def recorded(segment: Segment) -> dict:
    """A segment event as the record keeps it: its stream, the score to 2 places."""
    score = segment["score"]
    return {**segment, "score": None if score is None else round(score, 2), "stream": STREAM}


def covering(segments: list[Segment]) -> dict[int, Segment]:
    """seq -> the segment event that covers it; each seq at most once."""
    covered: dict[int, Segment] = {}
    for segment in segments:
        for seq in range(segment["start_seq"], segment["end_seq"] + 1):
            assert seq not in covered, f"frame {seq} is in two segments"
            covered[seq] = segment
    return covered


def stored_rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT seq, voice, speaker, final_speaker, final_score FROM frames "
                            "WHERE account = %s AND stream = %s ORDER BY seq", (ACCOUNT, STREAM)).fetchall()


def check_rows_agree(url: str, replies: list[dict], segments: list[Segment]) -> None:
    """Every frame has its row; a frame a segment covers holds that segment's
    speaker and score (as its line would show it), every other frame none."""
    covered = covering(segments)
    rows = stored_rows(url)
    assert [row[0] for row in rows] == list(range(1, len(replies) + 1))
    for seq, voice, _, final_speaker, final_score in rows:
        segment = covered.get(seq)
        expected = (None, None) if segment is None else (segment["speaker"], format_score(segment["score"]))
        assert (final_speaker, format_score(final_score)) == expected, (seq, voice)
        if segment is not None:
            assert voice == 1, f"frame {seq} is unvoiced but in a segment"


def format_score(score: float | None) -> str | None:
    return None if score is None else f"{score:.2f}"


def rest_segments(client: FlaskClient, **query: str | int) -> dict:
    answer = client.get(f"/accounts/{ACCOUNT}/segments", query_string=query)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def run_tail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TAIL, *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DATABASE_URL": ""})


def new_database(server: PostgresServer) -> str:
    """A database of the module's own on the module's server (pg_url's are per test)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"postgresql://postgres@{server.host}:{server.port}/{name}"


@dataclass(frozen=True)
class Streamed:
    root: Path
    url: str
    replies: list[dict]
    segments: list[Segment]


@pytest.fixture(scope="module")
def streamed(pg_server: PostgresServer, conversation: Conversation,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Streamed]:
    """The whole conversation streamed and CLOSEd through a --database worker."""
    root, url = tmp_path_factory.mktemp("segment-record"), new_database(pg_server)
    app = database_app(root, url)
    try:
        with app.test_client() as client:
            enroll(client, conversation)
            replies = send(client, conversation.frames, 1)
            closed = close(client)
        segments = segment_events(replies, closed)
        assert len({segment["speaker"] for segment in segments}) >= 2, segments  # both speakers named
        yield Streamed(root, url, replies, segments)
    finally:
        close_storage(app)


def test_every_frames_row_holds_the_final_label_of_its_segment(streamed: Streamed):
    check_rows_agree(streamed.url, streamed.replies, streamed.segments)
    voiced = {seq for seq, reply in enumerate(streamed.replies, 1) if reply["voice"]}
    # Every voiced frame of a stream with enrolled speakers is in a segment.
    assert set(covering(streamed.segments)) == voiced


def test_the_segments_file_and_table_list_exactly_the_segment_events(streamed: Streamed):
    text = (streamed.root / "logs" / f"{ACCOUNT}.segments.txt").read_text()
    assert text == "".join(format_segment(segment, STREAM) for segment in streamed.segments)
    with psycopg.connect(streamed.url) as conn:
        table = conn.execute("SELECT start_stamp, end_stamp, speaker, score, start_seq, end_seq, frames, stream "
                             "FROM segments WHERE account = %s ORDER BY end_stamp", (ACCOUNT,)).fetchall()
    assert [(start, end, speaker, format_score(score), first, last, frames, stream)
            for start, end, speaker, score, first, last, frames, stream in table] == \
        [(text_stamp(s["start"]), text_stamp(s["end"]), s["speaker"], format_score(s["score"]), s["start_seq"],
          s["end_seq"], s["frames"], STREAM) for s in streamed.segments]


def test_rest_returns_the_segments_from_postgresql_and_from_the_file(streamed: Streamed, tmp_path: Path):
    expected = [recorded(segment) for segment in streamed.segments]
    app = database_app(tmp_path / "another-host", streamed.url)  # PostgreSQL: every host's segments
    try:
        with app.test_client() as client:
            assert rest_segments(client, limit=1000) == {"account": ACCOUNT, "segments": expected, "more": False}
            assert page_through(client, 3) == expected
            assert rest_segments(client, stream="conn-2") == {"account": ACCOUNT, "segments": [], "more": False}
            middle = streamed.segments[len(expected) // 2]["end"]
            assert rest_segments(client, since=middle)["segments"] == \
                [s for s in expected if s["end"] > middle]
            assert rest_segments(client, since=str(text_stamp(middle)))["segments"] == \
                [s for s in expected if s["end"] > middle]
    finally:
        close_storage(app)
    # A worker without --database reads this host's segments file.
    with create_app(worker_config(streamed.root, "none", port=PORT + 1)).test_client() as client:
        assert rest_segments(client, limit=1000) == {"account": ACCOUNT, "segments": expected, "more": False}
        assert page_through(client, 4) == expected


def page_through(client: FlaskClient, limit: int) -> list[dict]:
    """Every segment, asking limit at a time with since = the last one's end."""
    got: list[dict] = []
    query: dict[str, str | int] = {"limit": limit}
    while True:
        page = rest_segments(client, **query)
        got += page["segments"]
        assert len(page["segments"]) <= limit
        if not page["more"]:
            return got
        query["since"] = got[-1]["end"]


def test_tail_prints_the_final_labels_and_the_segments(streamed: Streamed):
    covered = covering(streamed.segments)
    lines = (streamed.root / "logs" / f"{ACCOUNT}.txt").read_text().splitlines(keepends=True)
    expected = []
    for seq, text in enumerate(lines, 1):  # one stream: the file is in seq order
        line = parse_line(text)
        assert line is not None
        segment = covered.get(seq)
        speaker, score = (None, None) if segment is None else (segment["speaker"], segment["score"])
        expected.append(format_line(stamp_time(text_stamp(line.time)), line.voice, line.worker, line.ms, speaker,
                                    None if score is None else round(score, 2)))
    final = run_tail(ACCOUNT, "--database", streamed.url, "--final")
    assert final.returncode == 0, final.stderr
    assert final.stdout == "".join(expected)
    # ... where the plain tail prints the immediate labels, the lines of the file.
    assert run_tail(ACCOUNT, "--database", streamed.url).stdout == "".join(lines)
    segments = run_tail(ACCOUNT, "--database", streamed.url, "--segments")
    assert segments.returncode == 0, segments.stderr
    assert segments.stdout == (streamed.root / "logs" / f"{ACCOUNT}.segments.txt").read_text()


def test_a_database_outage_mid_stream_delays_the_labels_and_loses_none(own_pg, conversation: Conversation,
                                                                        tmp_path: Path):
    app = database_app(tmp_path, own_pg.url)
    worker: Worker = app.extensions[EXTENSION]
    try:
        with app.test_client() as client:
            enroll(client, conversation)
            half = len(conversation.frames) // 2
            replies = send(client, conversation.frames[:half], 1)
            own_pg.server.stop("immediate")
            replies += send(client, conversation.frames[half:], half + 1)
            closed = close(client)
            database = client.get("/health").get_json()["database"]
            assert database["state"] == "down" and database["spooled"] > 0 and database["spooled_finals"] > 0
            answer = client.get(f"/accounts/{ACCOUNT}/segments")
            assert answer.status_code == 503 and "try again shortly" in answer.get_json()["error"]
            own_pg.server.start()
            wait_until(lambda: spool_empty(client), 60, "the spooled rows and labels to reach PostgreSQL")
            segments = segment_events(replies, closed)
            assert any(text_stamp(s["end"]) >= T0 + half * 100_000 for s in segments)  # some made during the outage
            check_rows_agree(own_pg.url, replies, segments)
            assert rest_segments(client, limit=1000)["segments"] == [recorded(s) for s in segments]
            assert worker.storage.health()["dropped_finals"] == 0
    finally:
        close_storage(app)


def spool_empty(client: FlaskClient) -> bool:
    database = client.get("/health").get_json()["database"]
    return database["state"] == "up" and database["spooled"] == database["spooled_finals"] == 0
