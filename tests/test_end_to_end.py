"""Real speech through the running system: balancer + three workers as processes."""
from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from balancer.routing import pick_worker
from voicestream.logline import parse_line
from voicestream.wav import split_frames
from voicetools.cluster import make_system

pytestmark = pytest.mark.integration


def frames_of(samples: np.ndarray, rate: int, frame_ms: int = 100) -> list[bytes]:
    """Consecutive frame_ms WAV frames (PCM16 mono); the last may be shorter."""
    return split_frames(samples, rate, frame_ms / 1000)


def read(path, seconds: float | None = None) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(path, dtype="float32")
    return (samples[: int(rate * seconds)] if seconds else samples), rate


def message(account: str, frame: bytes, form: str) -> list[str | bytes]:
    if form == "binary":
        return [f"ACCOUNTCODE={account}", frame]
    if form == "json":
        return [json.dumps({"text": f"ACCOUNTCODE={account}", "binary_data": base64.b64encode(frame).decode()})]
    return [str({"text": f"ACCOUNTCODE={account}", "binary_data": frame})]


async def stream(url: str, account: str, frames: list[bytes], form: str = "binary") -> list[dict]:
    replies = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for frame in frames:
            for part in message(account, frame, form):
                await (ws.send_str(part) if isinstance(part, str) else ws.send_bytes(part))
            replies.append(await ws.receive_json(timeout=30))
        await ws.send_str("CLOSE")
        closed = await ws.receive_json(timeout=10)  # the account's StreamClosed, then the close
        assert (closed["account"], closed["closed"], "error" in closed) == (account, True, False), closed
        closing = await ws.receive(timeout=10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    return replies


def owner_port(system, account: str) -> int:
    urls = [system.worker_url(i) for i in range(len(system.worker_ports))]
    return int(pick_worker(account, urls).rsplit(":", 1)[1])


def check_log(system, account: str, replies: list[dict]) -> list[int]:
    lines = system.account_log(account)
    assert len(lines) == len(replies), "one log line per frame"
    port = owner_port(system, account)
    parsed = [parse_line(line) for line in lines]
    voices = []
    for line, fields, reply in zip(lines, parsed, replies, strict=True):
        assert fields is not None, f"log line not in the contract format: {line!r}"
        assert fields.worker == port == reply["worker"]
        assert fields.voice == reply["voice"]
        voices.append(fields.voice)
    stamps = [fields.time for fields in parsed if fields is not None]
    assert stamps == sorted(stamps)
    return voices


@pytest.mark.parametrize("name, form, account", [
    ("en_example.wav", "binary", "e2e16k"),
    ("sample1.wav", "json", "e2e8k"),
    ("sample3.wav", "literal", "e2e_legacy"),
])
def test_websocket_replay_logs_one_line_per_frame_on_the_owning_worker(system, speech, name, form, account):
    samples, rate = read(speech(name), seconds=15)
    frames = frames_of(samples, rate)
    replies = asyncio.run(stream(system.ws_url, account, frames, form))
    assert [r.get("seq") for r in replies] == list(range(1, len(frames) + 1))
    assert all("error" not in r and r["account"] == account for r in replies), replies[:3]
    assert all(set(r) >= {"voice", "prob", "db", "worker", "ms"} for r in replies)
    voices = check_log(system, account, replies)
    assert sum(voices) / len(voices) > 0.5  # real speech, mostly voiced


def test_voice_on_speech_and_not_on_silence(system, speech):
    torch = pytest.importorskip("torch")
    from silero_vad import get_speech_timestamps, load_silero_vad

    samples, rate = read(speech("en_example.wav"), seconds=20)
    silence = np.zeros(2 * rate, np.float32)
    audio = np.concatenate([silence, samples, silence])
    replies = asyncio.run(stream(system.ws_url, "speech_silence", frames_of(audio, rate)))
    voices = check_log(system, "speech_silence", replies)
    assert voices[:20] == [0] * 20, "leading silence"
    assert voices[-17:] == [0] * 17, "trailing silence (after the 100 ms hangover)"
    # Frames wholly inside the speech that silero finds in the whole recording
    # (offline, with its own utilities) are voiced.
    segments = get_speech_timestamps(torch.from_numpy(samples), load_silero_vad(onnx=True), sampling_rate=rate)
    inside = [k for k in range(len(samples) * 10 // rate)
              if any(s["start"] <= k * rate // 10 and (k + 1) * rate // 10 <= s["end"] for s in segments)]
    assert len(inside) > 100
    voiced = sum(voices[20 + k] for k in inside) / len(inside)
    assert voiced > 0.95, voiced


def test_http_ingest(system, speech):
    samples, rate = sf.read(speech("sample2.wav"), dtype="int16")
    step = rate // 10

    async def post_all() -> list[tuple[int, dict]]:
        out = []
        async with aiohttp.ClientSession() as session:
            for seq, start in enumerate(range(0, rate * 5, step), start=1):
                body = {"ACCOUNTCODE": "ingest8k", "data": samples[start:start + step].tolist(),
                        "sample_rate": rate, "seq": seq}
                async with session.post(system.url + "/", json=body) as resp:
                    out.append((resp.status, await resp.json()))
            async with session.post(system.url + "/", json={"ACCOUNTCODE": "x/y", "data": [1]}) as resp:
                out.append((resp.status, await resp.json()))
        return out
    results = asyncio.run(post_all())
    *frames, bad = results
    assert all(status == 200 for status, _ in frames)
    assert [r["seq"] for _, r in frames] == list(range(1, 51))
    check_log(system, "ingest8k", [r for _, r in frames])
    assert bad[0] == 400 and "ACCOUNTCODE" in bad[1]["error"]


def test_bad_packets_get_error_replies_and_the_connection_stays_usable(system, speech):
    samples, rate = read(speech("sample1.wav"), seconds=1)
    frame = frames_of(samples, rate)[0]

    async def go() -> list[dict]:
        replies = []
        async with aiohttp.ClientSession() as session, session.ws_connect(system.ws_url) as ws:
            for part in [b"RIFF", "ACCOUNTCODE=../../etc/passwd", "{'text': 1}", "ACCOUNTCODE=badwav", b"not a wav",
                         "ACCOUNTCODE=goodafter", frame]:
                await (ws.send_str(part) if isinstance(part, str) else ws.send_bytes(part))
                if part not in ("ACCOUNTCODE=badwav", "ACCOUNTCODE=goodafter"):
                    replies.append(await ws.receive_json(timeout=10))
        return replies
    replies = asyncio.run(go())
    assert "binary part without a text part" in replies[0]["error"]
    assert "invalid ACCOUNTCODE" in replies[1]["error"]
    assert "'text'" in replies[2]["error"]
    assert "not a WAV" in replies[3]["error"] and replies[3]["account"] == "badwav"
    assert "error" not in replies[4] and replies[4]["seq"] == 5
    assert system.account_log("badwav") == [] and len(system.account_log("goodafter")) == 1
    assert not (system.log_dir.parent / "etc").exists()


def test_concurrent_accounts_on_one_worker_match_their_solo_runs(tmp_path, speech):
    """Many accounts interleaved on one worker process (threads, batched VAD)
    get exactly what each gets alone."""
    sources = [read(speech(n), seconds=8) for n in ("en_example.wav", "sample1.wav", "sample2.wav", "sample3.wav")]
    streams = {f"solo{i}": frames_of(*sources[i % 4]) for i in range(8)}
    system = make_system(tmp_path, n_workers=1, worker_args=["--encoder", "none"]).start()
    try:
        solo = {a: asyncio.run(stream(system.ws_url, a + "_alone", f)) for a, f in list(streams.items())[:4]}

        async def together():
            return await asyncio.gather(*(stream(system.ws_url, a, f) for a, f in streams.items()))
        results = dict(zip(streams, asyncio.run(together()), strict=True))
    finally:
        system.stop()
    for i, (account, replies) in enumerate(results.items()):
        reference = solo[f"solo{i % 4}"]
        assert [r["voice"] for r in replies] == [r["voice"] for r in reference]
        np.testing.assert_allclose([r["prob"] for r in replies], [r["prob"] for r in reference], atol=2e-3)
        assert len(system.account_log(account)) == len(replies)
