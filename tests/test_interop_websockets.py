"""The protocol spoken by another client library: `websockets`, the one the
protocol's original client uses, against the real balancer and workers.

Every packet form, CLOSE and the error replies; and a client that, like the
original one, sends a minute of frames and never reads a reply. What happens
then (docs/protocol.md, "A client that never reads"): the replies wait in
the TCP buffers, not in the balancer, which serves every frame and every
other client as usual; websockets itself stops reading its socket once
max_queue (16) replies are unread, so its close() cannot see the balancer's
close frame and gives up after close_timeout.
"""
from __future__ import annotations

import asyncio
import base64
import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psutil
import pytest
import soundfile as sf
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK

from balancer.packets import PacketError, parse_header
from voicestream.logline import LogLine, parse_line
from voicestream.wav import split_frames
from voicetools.cluster import System, wait_until
from voicetools.paths import REPO

pytestmark = pytest.mark.integration

RATE = 16000
MINUTE = 600  # 100 ms frames


def frames_of(path_name: str, count: int | None = None) -> list[bytes]:
    samples, rate = sf.read(REPO / "data" / path_name, dtype="int16")
    assert rate == RATE
    return split_frames(samples, rate, 0.1)[:count]


def minute_of_speech() -> list[bytes]:
    """600 frames of 100 ms: the 16 kHz recordings of data/ end to end (50 s),
    then again from the start."""
    speech = np.concatenate([sf.read(path, dtype="int16")[0] for path in sorted(REPO.glob("data/*_16k.wav"))])
    samples = np.tile(speech, 2)[:MINUTE * RATE // 10]
    frames = split_frames(samples, RATE, 0.1)
    assert len(frames) == MINUTE and all(len(frame) == len(frames[0]) for frame in frames)
    return frames


def literal_packet(account: str, frame: bytes) -> str:
    """The legacy form, as the original client wrote it: str() of the dict."""
    return str({"text": f"ACCOUNTCODE={account}", "binary_data": frame})


def logged(system: System, account: str) -> list[LogLine]:
    lines = [parse_line(line) for line in system.account_log(account)]
    assert None not in lines, f"a line of {account} is not in the log format: {system.account_log(account)}"
    return [line for line in lines if line is not None]


async def receive_json(ws: ClientConnection) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout=30)))


def test_every_packet_form_close_and_error_replies(system: System) -> None:
    account = "wsinterop"
    frames = frames_of("us_female_16k.wav", 4)

    async def go() -> tuple[list[dict[str, Any]], dict[str, Any], int | None]:
        replies = []
        async with connect(system.ws_url) as ws:
            await ws.send(f"ACCOUNTCODE={account}")  # 1: a text part, then the WAV as a binary message
            await ws.send(frames[0])
            replies.append(await receive_json(ws))
            await ws.send(json.dumps({"text": f"ACCOUNTCODE={account}",  # 2: one JSON text
                                      "binary_data": base64.b64encode(frames[1]).decode()}))
            replies.append(await receive_json(ws))
            await ws.send(literal_packet(account, frames[2]))  # 3: the Python literal
            replies.append(await receive_json(ws))
            await ws.send(frames[3])  # a binary part with no text part before it
            replies.append(await receive_json(ws))
            await ws.send("ACCOUNTCODE=no spaces")
            replies.append(await receive_json(ws))
            await ws.send(f"ACCOUNTCODE={account}")  # the connection is still open
            await ws.send(frames[3])
            replies.append(await receive_json(ws))
            await ws.send("CLOSE")
            closed = await receive_json(ws)  # the account's StreamClosed (its last events)...
            with pytest.raises(ConnectionClosedOK):  # ...then the balancer closes, 1000
                await asyncio.wait_for(ws.recv(), timeout=10)
            return replies, closed, ws.close_code
    replies, closed, close_code = asyncio.run(go())

    assert close_code == 1000
    assert closed == {"account": account, "closed": True, "events": closed["events"]}
    assert [reply["seq"] for reply in replies] == [1, 2, 3, 4, 5, 6]
    frame_replies = [replies[i] for i in (0, 1, 2, 5)]
    assert all("error" not in reply and reply["account"] == account for reply in frame_replies), replies
    with pytest.raises(PacketError) as bad_account:
        parse_header("ACCOUNTCODE=no spaces")
    assert [replies[3], replies[4]] == [
        {"error": "binary part without a text part: send 'ACCOUNTCODE=...' first", "seq": 4},
        {"error": str(bad_account.value), "seq": 5}]
    assert "invalid ACCOUNTCODE 'no spaces'" in replies[4]["error"]
    lines = logged(system, account)
    assert [(line.time, line.voice, line.worker) for line in lines] == \
        [(reply["time"], reply["voice"], reply["worker"]) for reply in frame_replies]


@contextmanager
def peak_rss(pid: int) -> Iterator[dict[str, int]]:
    """{"before", "peak"}: the process's RSS now and its highest while the
    block runs (sampled every 10 ms by a thread)."""
    process = psutil.Process(pid)
    seen = {"before": process.memory_info().rss, "peak": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            seen["peak"] = max(seen["peak"], process.memory_info().rss)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        done.set()
        sampler.join()
        seen["peak"] = max(seen["peak"], process.memory_info().rss)


def connections(system: System) -> int:
    with urllib.request.urlopen(f"{system.url}/health", timeout=5) as resp:
        return int(json.load(resp)["connections"])


def test_a_client_that_never_reads_a_minute_of_frames_is_logged_whole_while_others_are_served(system: System) -> None:
    silent, other = "wsnoreader", "wsreader"
    frames = minute_of_speech()
    packets = [literal_packet(silent, frame) for frame in frames]
    stream_bytes = sum(map(len, packets))

    async def warm_up() -> None:
        # The allocator's high-water mark for this packet form, before measuring.
        async with connect(system.ws_url) as ws:
            for frame in frames[:20]:
                await ws.send(literal_packet("wswarmup", frame))
                await receive_json(ws)

    async def never_read() -> None:
        # Defaults, as the original client; only close_timeout is shortened:
        # close() cannot see the balancer's close frame behind the unread
        # replies, so it waits close_timeout (10 s by default), then drops the
        # connection.
        async with connect(system.ws_url, close_timeout=2) as ws:
            for packet in packets:
                await ws.send(packet)
            await ws.send("CLOSE")
            await asyncio.to_thread(wait_until, lambda: len(system.account_log(silent)) >= MINUTE, 120,
                                    f"the {MINUTE} frames of the client that never reads in its log")

    async def read_each_reply() -> list[dict[str, Any]]:
        replies = []
        async with connect(system.ws_url) as ws:
            for frame in frames[:30]:  # the silent client's first 30 frames
                await ws.send(f"ACCOUNTCODE={other}")
                await ws.send(frame)
                replies.append(await receive_json(ws))
            await ws.send("CLOSE")
        return replies

    async def both() -> list[dict[str, Any]]:
        silent_task = asyncio.create_task(never_read())
        replies = await read_each_reply()
        await silent_task
        return replies

    assert system.balancer is not None
    output_before = len(system.balancer.output())
    asyncio.run(warm_up())
    with peak_rss(system.balancer.pid) as rss:
        replies = asyncio.run(both())
    wait_until(lambda: connections(system) == 0, 30, "the balancer to end both connections")

    # The reading client was answered as usual, one reply per frame, in order.
    assert [reply.get("seq") for reply in replies] == list(range(1, 31))
    assert all("error" not in reply for reply in replies), replies
    assert [line.voice for line in logged(system, other)] == [reply["voice"] for reply in replies]
    # Every frame of the one that never read was logged once, in order: its
    # first 30 decisions are those of the same frames on the reading client.
    lines = logged(system, silent)
    assert len(lines) == MINUTE
    assert [line.voice for line in lines[:30]] == [reply["voice"] for reply in replies]
    assert [line.time for line in lines] == sorted(line.time for line in lines)
    # Bounded memory: a balancer that held the packets it had not served yet
    # (as one reading ahead of the workers would) grows by up to the stream,
    # 7 MB of literal packets. This one reads a packet only when it has
    # answered the one before, so the rest wait in the kernel's TCP buffers,
    # and its replies leave at once. Measured: 1.4-1.8 MB over the warmed-up
    # RSS (allocator arenas), the same with a client that reads every reply;
    # the bound, half the stream, is twice that.
    growth = rss["peak"] - rss["before"]
    assert growth < stream_bytes / 2, \
        f"the balancer's RSS grew {growth / 2**20:.1f} MB on a {stream_bytes / 2**20:.1f} MB stream"
    output = system.balancer.output()[output_before:]
    assert "Traceback" not in output and " ERROR " not in output, output[-3000:]
