"""The system measured: a balancer and workers started by voicetools.cluster,
enrollment over REST, the conversation streamed over the WebSocket, and the
hypothesis read back from the account's frame log with voicetools.timeline."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from voicestream.events import SEGMENT
from voicestream.segments import parse_segment
from voicestream.wav import FRAME_SECONDS
from voicetools import timeline
from voicetools.cluster import System, make_system, stream_frames, wait_until

from . import ConversationError, EncoderUnavailable
from .build import RATE

REPLY_TIMEOUT = 60.0



def http(url: str, method: str = "GET", data: bytes | None = None, timeout: float = 120) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "audio/wav"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.load(exc)
        except ValueError:
            return exc.code, {"error": exc.reason}
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"error": str(exc)}


def worker_args(encoder: str, root: Path, ecapa_source: str | None, lag_ms: int = 1000) -> list[str]:
    args = ["--encoder", encoder, "--store", str(root / "voiceprints.db"), "--activity-log", str(root / "activity.log"),
            "--speaker-lag-ms", str(lag_ms)]
    return args + (["--ecapa-source", ecapa_source] if encoder == "ecapa" and ecapa_source else [])


def start(encoder: str, root: Path, ecapa_source: str | None, workers: int, lag_ms: int = 1000
          ) -> tuple[System, dict]:
    """A balancer and workers with encoder, their encoders loaded, and the
    first worker's /health speakers status (model, graph); EncoderUnavailable
    (the system stopped) when the encoder cannot load."""
    system = make_system(root, n_workers=workers, worker_args=worker_args(encoder, root, ecapa_source, lag_ms))
    system.start()
    statuses: list[dict] = []
    try:
        for i in range(workers):
            def loaded(i: int = i) -> bool:
                status, body = http(f"{system.worker_url(i)}/health", timeout=5)
                if status == 200 and body["speakers"]["state"] != "loading":
                    statuses.append(body["speakers"])
                    return True
                return False
            # A first GE2E export takes about 30 s; an ECAPA one longer.
            wait_until(loaded, 600, f"worker {i} to load its {encoder} encoder", interval=0.2)
            if statuses[-1]["state"] != "ready":
                raise EncoderUnavailable(f"{encoder} encoder unavailable: "
                                         f"{statuses[-1].get('reason', statuses[-1])}")
    except BaseException:
        system.stop()
        raise
    return system, statuses[0]


def enroll(system: System, account: str, enrolled: Mapping[str, Sequence[Path]]) -> None:
    for name, files in enrolled.items():
        for path in files:
            status, body = http(f"{system.url}/accounts/{account}/speakers/{name}", "POST", path.read_bytes())
            if not 200 <= status < 300:
                raise ConversationError(f"enrolling {name} from {path} failed: {status} {body}")


def stream(url: str, account: str, samples: np.ndarray) -> list[dict]:
    """Every 100 ms frame over one WebSocket, each sent once the previous one
    is answered; the replies in order."""
    replies = stream_frames(url, account, samples, RATE, FRAME_SECONDS, REPLY_TIMEOUT)
    for i, reply in enumerate(replies):
        if "error" in reply:
            raise ConversationError(f"frame {i} of {account} was refused: {reply['error']}")
    return replies


def hypothesis(system: System, account: str, replies: Sequence[dict]) -> list[timeline.Segment]:
    """The immediate labels: the account's frame log as speaker segments in
    audio time (voicetools.timeline), checked against the replies: one line per
    frame, the same speakers."""
    path = system.log_dir / f"{account}.txt"
    lines, skipped = timeline.read_lines(path.read_text(encoding="utf-8", errors="replace").splitlines())
    logged = [line.speaker for line in lines]
    answered = [reply.get("speaker") for reply in replies]
    if skipped or logged != answered:
        raise ConversationError(f"{path}: {len(lines)} frame line(s) ({skipped} other) for {len(replies)} "
                                f"replies, or other speakers than the replies named")
    frames = timeline.to_frames(lines, FRAME_SECONDS, clock="frames")
    return timeline.segments(frames, gap_seconds=float("inf"))


def final_hypothesis(system: System, account: str, replies: Sequence[dict]) -> list[timeline.Segment]:
    """The final labels: the account's segments file in audio time (frame seq k
    is [(k - 1) * 0.1, k * 0.1) s), checked against the segment events the
    replies carried: every event in the file, in order, and the file covering
    every voiced frame once."""
    path = system.log_dir / f"{account}.segments.txt"
    if not path.exists():
        raise ConversationError(f"{path} is missing: the workers wrote no final labels")
    lines = [parse_segment(line) for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    if any(line is None for line in lines):
        raise ConversationError(f"{path}: a line that is not a segment")
    segments = [line for line in lines if line is not None]
    sent = [(e["start_seq"], e["end_seq"], e["speaker"]) for reply in replies for e in reply.get("events", [])
            if e["type"] == SEGMENT]
    filed = [(s.start_seq, s.end_seq, s.speaker) for s in segments]
    if filed[:len(sent)] != sent:
        raise ConversationError(f"{path}: its segments are not the ones the replies' events announced")
    covered = [seq for s in segments for seq in range(s.start_seq, s.end_seq + 1)]
    voiced = [i + 1 for i, reply in enumerate(replies) if reply.get("voice")]
    if covered != voiced:
        raise ConversationError(f"{path}: {len(covered)} frames in segments for {len(voiced)} voiced frames, or "
                                f"not each once in order")
    return [timeline.Segment(s.speaker, (s.start_seq - 1) * FRAME_SECONDS, s.end_seq * FRAME_SECONDS, s.frames)
            for s in segments]
