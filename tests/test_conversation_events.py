"""A real two-speaker conversation (../shared/data/conversation/sample.wav)
through a real balancer and GE2E workers, frame by frame: the events of the
replies and of CLOSE's answer (voicestream/events.py, docs/protocol.md#events).

- every event exactly once and in order: each voiced frame in exactly one
  segment, segments in order and disjoint; speech_start / speech_end
  alternate with the replies' voice; speaker_change where the replies'
  speaker changes;
- final labels within the lag: a segment comes in the reply of a frame at
  most --speaker-lag-ms after its last frame (the default 1000 and 300), and
  not before its look-ahead (the lag less one frame), or in the answer to
  CLOSE, which flushes the rest;
- the segments file lists exactly the segment events; with --database
  (a real PostgreSQL), so do the segments table and every frame's row (the
  final label of the segment that covers it);
- HTTP ingest: the events in the replies, and the last labels in the record
  once the balancer closed the idle stream;
- a retried frame the worker answers as a duplicate keeps its events;
- a worker killed mid-conversation: the stream goes on at the other worker,
  whose first reply says tracker_restart; the segments from there cover the
  frames from there exactly once.

Both speakers are enrolled from the longest stretch the RTTM gives each alone.
"""
from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psycopg
import pytest

from balancer.forward import forward_frame
from balancer.links import WorkerLink
from balancer.metrics import BalancerMetrics
from balancer.packets import Header, Packet
from balancer.routing import rank_workers
from balancer.workers import WorkerPool
from speaker_helpers import call, ge2e_system, real_conversation
from test_api_docs import payload_validator
from test_segment_record import format_score
from voicestream.segments import parse_segment
from voicestream.wav import encode_wav
from voicetools.cluster import System, wait_until

pytestmark = pytest.mark.integration
pytest_plugins = ["pg"]  # pg_url: a real PostgreSQL for the --database test

FRAME_MS = 100
DEFAULT_LAG_MS = 1000  # the worker's --speaker-lag-ms default


@dataclass(frozen=True)
class Conversation:
    samples: np.ndarray
    rate: int
    turns: list[tuple[str, float, float]]  # (speaker, start s, end s) from the RTTM

    def frames(self) -> list[np.ndarray]:
        n = self.rate * FRAME_MS // 1000
        return [self.samples[i:i + n] for i in range(0, len(self.samples) - n + 1, n)]

    def longest_solo(self, speaker: str) -> np.ndarray:
        """The speaker's longest stretch with nobody else speaking."""
        others = [(a, b) for name, a, b in self.turns if name != speaker]
        best = (0.0, 0.0)
        for name, a, b in self.turns:
            if name != speaker:
                continue
            # Cut the turn at every other speaker's turn; keep the longest piece.
            pieces = [(a, b)]
            for oa, ob in others:
                pieces = [part for pa, pb in pieces for part in ((pa, min(pb, oa)), (max(pa, ob), pb))
                          if part[1] - part[0] > 0]
            best = max([best, *pieces], key=lambda p: p[1] - p[0])
        return self.samples[int(best[0] * self.rate):int(best[1] * self.rate)]

    @property
    def speakers(self) -> list[str]:
        return sorted({name for name, _, _ in self.turns})


@pytest.fixture(scope="module")
def conversation() -> Conversation:
    return Conversation(*real_conversation())


def enroll_both(system: System, account: str, conversation: Conversation) -> None:
    for name in conversation.speakers:
        reply = call(f"{system.url}/accounts/{account}/speakers/{name}", "POST",
                     encode_wav(conversation.longest_solo(name), conversation.rate))
        assert reply.status == 201, reply.body


@pytest.fixture(scope="module")
def with_lag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[int], System]]:
    """with_lag(ms) -> a balancer and one GE2E worker with --speaker-lag-ms ms,
    started on first use and shared by the module's tests."""
    systems: dict[int, System] = {}
    with ExitStack() as stack:
        def start(lag: int) -> System:
            if lag not in systems:
                args = [] if lag == DEFAULT_LAG_MS else ["--speaker-lag-ms", str(lag)]
                systems[lag] = stack.enter_context(ge2e_system(tmp_path_factory.mktemp(f"events-lag{lag}"),
                                                               n_workers=1, worker_args=args))
            return systems[lag]
        yield start


@dataclass
class Session:
    """What a WebSocket client saw: the replies in order, the messages after CLOSE and the close code."""
    replies: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None


async def stream_session(url: str, account: str, frames: list[np.ndarray], rate: int,
                         after: dict[int, Any] | None = None) -> Session:
    """frames over one WebSocket, each sent once the one before is answered,
    then CLOSE; after[seq]() runs once frame seq is answered."""
    session = Session()
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        for seq, frame in enumerate(frames, start=1):
            await ws.send_str(f"ACCOUNTCODE={account}")
            await ws.send_bytes(encode_wav(frame, rate))
            session.replies.append(await ws.receive_json(timeout=60))
            if after and seq in after:
                await asyncio.to_thread(after[seq])
        await ws.send_str("CLOSE")
        while (msg := await ws.receive(timeout=60)).type == aiohttp.WSMsgType.TEXT:
            session.closed.append(json.loads(msg.data))
        session.close_code = ws.close_code
    return session


def arrivals(replies: list[dict[str, Any]], closed: list[dict[str, Any]]) -> list[tuple[int | None, dict[str, Any]]]:
    """Every event with the seq of the reply it came in (None: CLOSE's answer), in arrival order."""
    out: list[tuple[int | None, dict[str, Any]]] = [(reply["seq"], event) for reply in replies
                                                    for event in reply.get("events", [])]
    return out + [(None, event) for message in closed for event in message["events"]]


def segments_of(events: list[tuple[int | None, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [event for _, event in events if event["type"] == "segment"]


def check_segments(segments: list[dict[str, Any]], by_seq: dict[int, dict[str, Any]], first: int = 1,
                   complete: bool = True) -> None:
    """In order and disjoint, each a run of voiced frames with its frames'
    stamps; if complete, together every voiced frame from seq first on
    exactly once."""
    covered: list[int] = []
    for segment in segments:
        start, end = segment["start_seq"], segment["end_seq"]
        assert segment["final"] is True and segment["frames"] == end - start + 1, segment
        assert (segment["start"], segment["end"]) == (by_seq[start]["time"], by_seq[end]["time"]), segment
        assert all(by_seq[seq]["voice"] == 1 for seq in range(start, end + 1)), segment
        assert not covered or start > covered[-1], f"segment {start}-{end} is not after the one before"
        covered += range(start, end + 1)
    voiced = [seq for seq, reply in sorted(by_seq.items()) if seq >= first and reply["voice"] == 1]
    assert covered == voiced or not complete, "every voiced frame in exactly one segment"


def check_frame_events(replies: list[dict[str, Any]], start: int = 0, http: bool = False) -> None:
    """speech_start / speech_end exactly where the replies' voice turns on or
    off, speaker_change exactly where their speaker changes; each in the
    reply of its own frame (replies[start:], state fresh at replies[start]).
    http: an event's seq is the frame's in the account's HTTP stream (the
    i-th frame's is i + 1), not the request's."""
    voice: int | None = None
    label: str | None = None
    for i, reply in enumerate(replies[start:], start=start):
        kinds = {e["type"]: e for e in reply.get("events", []) if e["type"] != "segment"}
        for event in kinds.values():
            assert (event["seq"], event["time"]) == (i + 1 if http else reply["seq"], reply["time"]), event
        expected = set()
        if reply["voice"] == 1 and voice != 1:
            expected.add("speech_start")
        if reply["voice"] == 0 and voice == 1:
            expected.add("speech_end")
        if "speaker" in reply and reply["speaker"] != label:
            expected.add("speaker_change")
            assert (kinds["speaker_change"]["speaker"], kinds["speaker_change"]["previous"]) == \
                (reply["speaker"], label), reply
            label = reply["speaker"]
        assert set(kinds) - {"tracker_restart"} == expected, reply
        voice = reply["voice"]
    kinds = [e["type"] for r in replies[start:] for e in r.get("events", []) if e["type"].startswith("speech")]
    assert kinds == ["speech_start", "speech_end"] * (len(kinds) // 2) + ["speech_start"] * (len(kinds) % 2)


def segments_file(system: System, account: str) -> list[dict[str, Any]]:
    path = system.log_dir / f"{account}.segments.txt"
    lines = [parse_segment(line) for line in path.read_text().splitlines()] if path.exists() else []
    assert None not in lines, "every line in the segments format"
    return [{**line.event(), "stream": line.stream} for line in lines if line is not None]


def same_segment(event: dict[str, Any], line: dict[str, Any]) -> bool:
    """The file keeps a score to 2 decimals."""
    score_ok = (event["score"] is None) == (line["score"] is None) and (
        event["score"] is None or abs(event["score"] - line["score"]) <= 0.0051)
    return score_ok and {k: v for k, v in event.items() if k != "score"} == \
        {k: v for k, v in line.items() if k not in ("score", "stream")}


@pytest.mark.parametrize("lag", [DEFAULT_LAG_MS, 300])
def test_a_conversations_events_come_once_in_order_within_the_lag_and_close_flushes_the_rest(
        with_lag: Callable[[int], System], lag: int, conversation: Conversation) -> None:
    system = with_lag(lag)
    account = f"talk{lag}"
    enroll_both(system, account, conversation)
    session = asyncio.run(stream_session(system.ws_url, account, conversation.frames(), conversation.rate))

    replies, reply_schema = session.replies, payload_validator("frameReply")
    assert [r.get("error") for r in replies] == [None] * len(replies)
    assert [r["seq"] for r in replies] == list(range(1, len(replies) + 1))
    assert all(reply_schema.is_valid(r) for r in replies)
    assert {r.get("speaker") for r in replies} >= set(conversation.speakers)  # both are heard
    check_frame_events(replies)

    # CLOSE: one StreamClosed for the account, with the last segments, then 1000.
    assert session.close_code == 1000
    assert [(m["account"], m["closed"], "error" in m) for m in session.closed] == [(account, True, False)]
    assert payload_validator("streamClosed").is_valid(session.closed[0])
    events = arrivals(replies, session.closed)
    segments = segments_of(events)
    check_segments(segments, {r["seq"]: r for r in replies})
    assert replies[-1]["voice"] == 1 and session.closed[0]["events"], \
        "the conversation ends speaking: its last segment can only come at CLOSE"
    assert {e["type"] for e in session.closed[0]["events"]} == {"segment"}

    # Within the lag: a segment comes in the reply of a frame at most lag/100 frames after its last frame.
    in_replies = [(arrived, e["end_seq"]) for arrived, e in events if e["type"] == "segment" and arrived is not None]
    assert in_replies, "final labels come in the replies"
    late = [(arrived, end) for arrived, end in in_replies if not end < arrived <= end + lag // FRAME_MS]
    assert late == [], f"segments (reply seq, end_seq) outside {lag} ms"
    # ...and never before its look-ahead: the lag less the one frame that tells whether the segment ends.
    early = [(arrived, end) for arrived, end in in_replies if arrived < end + lag // FRAME_MS - 1]
    assert early == [], "segments (reply seq, end_seq) final before their look-ahead"

    # The record: the segments file lists exactly the events, for this stream.
    lines = segments_file(system, account)
    assert len(lines) == len(segments) and len({line["stream"] for line in lines}) == 1
    assert all(same_segment(e, line) for e, line in zip(segments, lines, strict=True)), (segments, lines)


def test_with_a_database_the_rows_and_the_segments_table_agree_with_the_events(
        pg_url: str, tmp_path: Path, conversation: Conversation) -> None:
    """A real balancer and a --database worker: the PostgreSQL record of the
    conversation holds exactly what its client was told."""
    account = "talkdb"
    with ge2e_system(tmp_path, n_workers=1, worker_args=["--database", pg_url]) as system:
        enroll_both(system, account, conversation)
        session = asyncio.run(stream_session(system.ws_url, account, conversation.frames(), conversation.rate))
        lines = segments_file(system, account)
    replies = session.replies
    assert [r.get("error") for r in replies] == [None] * len(replies)
    segments = segments_of(arrivals(replies, session.closed))
    check_segments(segments, {r["seq"]: r for r in replies})
    assert len({s["speaker"] for s in segments}) == 2, "both speakers named"
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT seq, stream, voice, final_speaker, final_score FROM frames WHERE account = %s "
                            "ORDER BY seq", (account,)).fetchall()
        table = conn.execute("SELECT speaker, score, start_seq, end_seq, frames, stream FROM segments "
                             "WHERE account = %s ORDER BY end_stamp", (account,)).fetchall()
    (stream,) = {line["stream"] for line in lines}
    # Every frame has its row, and a voiced frame the final label of the segment that covers it.
    covering = {seq: s for s in segments for seq in range(s["start_seq"], s["end_seq"] + 1)}
    assert [(seq, row_stream) for seq, row_stream, *_ in rows] == [(r["seq"], stream) for r in replies]
    for seq, _, voice, final_speaker, final_score in rows:
        segment = covering.get(seq)
        expected = (None, None) if segment is None else (segment["speaker"], format_score(segment["score"]))
        assert (final_speaker, format_score(final_score)) == expected, (seq, voice)
    # The segments table and file: exactly the segment events, in order.
    assert [(speaker, format_score(score), first, last, frames, row_stream)
            for speaker, score, first, last, frames, row_stream in table] == \
        [(s["speaker"], format_score(s["score"]), s["start_seq"], s["end_seq"], s["frames"], stream) for s in segments]
    assert len(lines) == len(segments) and all(same_segment(e, line) for e, line in zip(segments, lines, strict=True))


def test_http_ingest_gets_events_in_its_replies_and_its_last_labels_in_the_record(
        with_lag: Callable[[int], System], conversation: Conversation) -> None:
    system = with_lag(DEFAULT_LAG_MS)
    account = "talkhttp"
    enroll_both(system, account, conversation)
    replies = []
    for i, frame in enumerate(conversation.frames()):
        body = json.dumps({"ACCOUNTCODE": account, "data": frame.tolist(), "sample_rate": conversation.rate,
                           "seq": 1000 + i}).encode()
        request = urllib.request.Request(system.url + "/", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            replies.append(json.load(resp))
    assert [r["seq"] for r in replies] == [1000 + i for i in range(len(replies))]  # the client's own
    check_frame_events(replies, http=True)
    # The frames are one stream: its seqs count them from 1 (frame i is seq i + 1 there).
    by_stream_seq = {i + 1: reply for i, reply in enumerate(replies)}
    in_replies = segments_of(arrivals(replies, []))
    assert in_replies, "final labels come in the replies"
    # Once the balancer closed the idle stream (5 s), the record holds the rest.
    wait_until(lambda: sum(line["frames"] for line in segments_file(system, account))
               == sum(r["voice"] for r in replies), 60, "the idle HTTP stream's last segments in the record")
    lines = segments_file(system, account)
    assert len({line["stream"] for line in lines}) == 1 and lines[0]["stream"].startswith("http-")
    check_segments([{k: v for k, v in line.items() if k != "stream"} for line in lines], by_stream_seq)
    # The replies had the first of them, the idle close made the rest final.
    assert len(lines) > len(in_replies)
    assert all(same_segment(e, line) for e, line in zip(in_replies, lines[:len(in_replies)], strict=True))


def test_a_retried_frame_answered_as_a_duplicate_keeps_its_events(with_lag: Callable[[int], System],
                                                                  conversation: Conversation) -> None:
    system = with_lag(DEFAULT_LAG_MS)
    worker = system.worker_url(0)
    frames = conversation.frames()

    async def go() -> tuple[dict[str, Any], dict[str, Any], BalancerMetrics]:
        metrics = BalancerMetrics((worker,))
        pool = WorkerPool((worker,))
        async with aiohttp.ClientSession() as session:
            await pool.check(session)
            links = {worker: WorkerLink(worker, session, 30)}
            stamp = 1_700_000_000_000_000
            for seq, frame in enumerate(frames, start=1):
                packet = Packet(Header("retried"), encode_wav(frame, conversation.rate))
                first = await forward_frame(pool, links, packet, "retry-stream", seq, stamp + seq, 30, metrics)
                if first.get("events"):  # the retry of this frame (same stream, seq and stamp)
                    again = await forward_frame(pool, links, packet, "retry-stream", seq, stamp + seq, 30, metrics)
                    return first, again, metrics
        raise AssertionError("no frame of the conversation had an event")
    first, again, metrics = asyncio.run(go())
    assert again == {**first, "duplicate": True}
    assert metrics.registry.get_sample_value("voicestream_balancer_frames_answered_total",
                                             {"outcome": "duplicate"}) == 1


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[System]:
    """A balancer and two GE2E workers, for a test that kills one."""
    with ge2e_system(tmp_path, n_workers=2) as system:
        yield system


def test_a_worker_killed_mid_conversation_the_stream_goes_on_and_the_client_is_told(
        pair: System, conversation: Conversation) -> None:
    account = "talkkill"
    enroll_both(pair, account, conversation)
    urls = [pair.worker_url(i) for i in range(2)]
    owner = urls.index(rank_workers(account, urls)[0])
    frames = conversation.frames()
    killed_after = len(frames) // 2
    session = asyncio.run(stream_session(pair.ws_url, account, frames, conversation.rate,
                                         after={killed_after: pair.workers[owner].kill}))

    replies = session.replies
    assert [r.get("error") for r in replies] == [None] * len(replies), "every frame answered"
    ports = [r["worker"] for r in replies]
    owner_port, other_port = pair.worker_ports[owner], pair.worker_ports[1 - owner]
    assert ports == [owner_port] * killed_after + [other_port] * (len(frames) - killed_after)
    # The client is told where tracking started afresh, once.
    restarts = [(r["seq"], e) for r in replies for e in r.get("events", []) if e["type"] == "tracker_restart"]
    assert [seq for seq, _ in restarts] == [killed_after + 1]
    assert restarts[0][1]["seq"] == killed_after + 1 and restarts[0][1]["reason"]
    check_frame_events(replies[:killed_after])
    check_frame_events(replies, start=killed_after)  # the new worker's VAD starts afresh too
    events = arrivals(replies, session.closed)
    segments = segments_of(events)
    by_seq = {r["seq"]: r for r in replies}
    before = [s for s in segments if s["end_seq"] <= killed_after]
    after = [s for s in segments if s["start_seq"] > killed_after]
    assert before + after == segments, "no segment spans the failover"
    check_segments(after, by_seq, first=killed_after + 1)
    # What the first worker sent is in order and disjoint too; what it held at its death never comes.
    check_segments(before, by_seq, complete=False)
    # CLOSE: the dead worker's close could not be sent, and the answer says so.
    (closed,) = session.closed
    assert closed["account"] == account and closed["events"]
    assert "did not reach 1 of the 2 workers" in closed["error"]
