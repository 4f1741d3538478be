"""Client-side helpers for the speaker tests: REST calls, WAV bytes, streaming
frames through the balancer's WebSocket, waiting for encoders to load."""
from __future__ import annotations

import asyncio
import io
import json
import re
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import soundfile as sf

from cluster import System, wait_until

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} voice=([01]), (\d+), (\d+)ms"
                      r"(?:, speaker=([A-Za-z0-9_.-]+), score=(-?\d\.\d\d))?$")


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict
    headers: dict


def call(url: str, method: str = "GET", data: bytes | None = None, content_type: str = "audio/wav",
         timeout: float = 60) -> Reply:
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, json.load(resp), dict(resp.headers))
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, json.load(exc), dict(exc.headers))


def call_json(url: str, body: object, method: str = "POST") -> Reply:
    return call(url, method, json.dumps(body).encode(), "application/json")


def multipart(field: str, filename: str, payload: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(path, dtype="int16", always_2d=False)
    return samples, rate


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.int16)


def wait_encoders(system: System, timeout: float = 180) -> list[dict]:
    """Every worker's /health speakers status once loading ended."""
    statuses: list[dict] = []
    for i in range(len(system.workers)):
        def loaded() -> bool:
            reply = call(f"{system.worker_url(i)}/health")
            if reply.status == 200 and reply.body["speakers"]["state"] != "loading":
                statuses.append(reply.body["speakers"])
                return True
            return False
        wait_until(loaded, timeout, f"worker {i} to load its speaker encoder", interval=0.2)
    return statuses


def stream(system: System, account: str, samples: np.ndarray, rate: int, frame_seconds: float = 0.1) -> list[dict]:
    """Send samples as frames over the balancer's WebSocket, one at a time,
    each answered before the next (fast pace); the replies in order."""
    return asyncio.run(_stream(system.ws_url, account, samples, rate, frame_seconds))


async def _stream(url: str, account: str, samples: np.ndarray, rate: int, frame_seconds: float) -> list[dict]:
    n = int(frame_seconds * rate)
    replies = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for start in range(0, len(samples) - n + 1, n):
            await ws.send_str(f"ACCOUNTCODE={account}")
            await ws.send_bytes(wav_bytes(samples[start:start + n], rate))
            reply = await ws.receive_json(timeout=60)
            assert "error" not in reply, reply
            replies.append(reply)
    return replies


def activity(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
