"""GET /accounts/<code>/segments on a worker without --database, in process
(Flask's test client): the account's segments from this host's segments
file, ordered by end across its streams, ?since= ?limit= ?stream=, and a 400
naming each bad parameter. (tests/test_segment_record.py reads them from a
real conversation's record, and from PostgreSQL.)"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from voicestream.events import SEGMENT, Segment
from voicestream.stamps import stamp_text
from worker.app import create_app
from worker.config import WorkerConfig
from worker.storage.segments import SegmentLog

T0 = 1_674_222_284_123_435  # 2023-01-20 13:44:44.123435


def segment(start_seq: int, end_seq: int, speaker: str = "alice", score: float | None = 0.71,
            offset: int = 0) -> Segment:
    """Frames start_seq..end_seq, one every 100 ms from T0 (plus offset microseconds)."""
    return {"type": SEGMENT, "speaker": speaker, "score": score, "start": stamp_text(T0 + offset + start_seq * 100_000),
            "end": stamp_text(T0 + offset + end_seq * 100_000), "start_seq": start_seq, "end_seq": end_seq,
            "frames": end_seq - start_seq + 1, "final": True}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    with create_app(WorkerConfig(encoder="none", log_dir=str(tmp_path / "logs"))).test_client() as client:
        yield client


@pytest.fixture
def written(tmp_path: Path) -> list[dict]:
    """Two streams' segments in acme's file, in the order they closed; as
    the route answers them, ordered by end."""
    one = [segment(1, 5, "alice", 0.714), segment(6, 9, "bob", None), segment(12, 20, "unknown", 0.5)]
    two = [segment(1, 3, "carol", 0.8, offset=50_000), segment(4, 15, "alice", 0.66, offset=50_000)]
    log = SegmentLog(tmp_path / "logs")
    log.append("acme", [("conn-1", one[0]), ("conn-2", two[0])])
    log.append("acme", [("conn-1", one[1])])
    log.append("acme", [("conn-2", two[1]), ("conn-1", one[2])])
    log.append("other", [("conn-3", segment(1, 2))])
    answers = [{**s, "score": None if s["score"] is None else round(s["score"], 2), "stream": stream}
               for stream, s in [("conn-1", one[0]), ("conn-2", two[0]), ("conn-1", one[1]), ("conn-2", two[1]),
                                 ("conn-1", one[2])]]
    return sorted(answers, key=lambda a: (a["end"], a["stream"], a["start_seq"]))


def get(client: FlaskClient, account: str = "acme", **query: str | int) -> tuple[int, dict]:
    reply = client.get(f"/accounts/{account}/segments", query_string=query)
    assert reply.is_json, reply.data[:200]
    return reply.status_code, reply.get_json()


def test_the_accounts_segments_ordered_by_end(client, written):
    assert get(client) == (200, {"account": "acme", "segments": written, "more": False})
    assert get(client, "nobody") == (200, {"account": "nobody", "segments": [], "more": False})


def test_since_limit_and_stream_choose_among_them(client, written):
    assert get(client, since=written[1]["end"]) == (200, {"account": "acme", "segments": written[2:], "more": False})
    since = T0 + 9 * 100_000  # conn-1's bob ends here: only what ends after
    assert get(client, since=since)[1]["segments"] == [s for s in written if s["end"] > stamp_text(since)]
    assert get(client, since="2023-01-20 13:44:44")[1]["segments"] == written  # the fraction optional
    assert get(client, limit=2) == (200, {"account": "acme", "segments": written[:2], "more": True})
    assert get(client, limit=2, since=written[1]["end"])[1]["segments"] == written[2:4]
    assert get(client, stream="conn-2")[1]["segments"] == [s for s in written if s["stream"] == "conn-2"]
    assert get(client, stream="conn-9")[1]["segments"] == []


def test_a_line_cut_short_is_skipped(client, written, tmp_path):
    with open(tmp_path / "logs" / "acme.segments.txt", "a") as file:
        file.write("2023-01-20 13:44:50.000000 2023-01-20 13:44:5")  # a writer killed in mid-line
    assert get(client)[1]["segments"] == written


@pytest.mark.parametrize(("query", "message"), [
    ({"since": "yesterday"}, "since 'yesterday' is not a frame stamp"),
    ({"since": "2023-01-20T13:44:44"}, "since '2023-01-20T13:44:44' is not a frame stamp"),
    ({"since": "1" * 18}, "is not a frame stamp: give microseconds since the epoch (UTC, at most 17 digits)"),
    ({"limit": "0"}, "limit '0' is not a whole number from 1 to 1000"),
    ({"limit": "1001"}, "limit '1001' is not a whole number from 1 to 1000"),
    ({"limit": "ten"}, "limit 'ten' is not a whole number"),
    ({"stream": ""}, "stream must be 1-256 printable characters"),
    ({"stream": "a\x00b"}, "stream must be 1-256 printable characters"),
    ({"limt": "5"}, "unknown parameter 'limt': this call takes since, limit, stream"),
])
def test_a_bad_parameter_is_a_400_naming_it(client, written, query, message):
    status, body = get(client, **query)
    assert status == 400 and message in body["error"], body


def test_a_bad_account_code_is_a_400(client):
    status, body = get(client, "not-an-account!")
    assert status == 400 and "ACCOUNTCODE" in body["error"]


def test_an_unreadable_file_is_a_503(client, tmp_path):
    (tmp_path / "logs" / "acme.segments.txt").mkdir(parents=True)  # not a file: reading it fails
    status, body = get(client)
    assert status == 503 and body["error"].startswith("the account's segments cannot be read now, try again shortly")
