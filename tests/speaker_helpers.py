"""Helpers for the speaker tests: REST calls, streaming frames through the
balancer's WebSocket, waiting for encoders to load, the GE2E graph the tests
share, running code where the export tools look uninstalled, and in-process
workers (their fixtures: speaker_apps.py)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from flask import Flask

from voicetools.cluster import System, make_system, stream_frames, wait_until
from voicetools.conversation.build import rttm_turns
from voicetools.paths import REPO, SHARED_DATA
from worker.app import create_app
from worker.config import WorkerConfig
from worker.context import EXTENSION, Worker

# The workers' default --model-dir (they run in the checkout): the GE2E graph
# is exported there on first use (about 30 s) and shared by every speaker test.
MODELS = REPO / "models"
DATA = REPO / "data"
# What a runtime-only install lacks (pyproject.toml's "export" extra).
EXPORT_TOOLS = ("torch", "torchaudio", "speechbrain", "resemblyzer")


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


CONVERSATION = SHARED_DATA / "conversation"


def real_conversation() -> tuple[np.ndarray, int, list[tuple[str, float, float]]]:
    """../shared/data/conversation: its samples, rate and reference turns
    (speaker, start, end); the calling test is skipped when it is absent."""
    wav, rttm = CONVERSATION / "sample.wav", CONVERSATION / "sample.rttm"
    if not (wav.exists() and rttm.exists()):
        pytest.skip(f"real recordings not available: {wav} or {rttm} is absent "
                    "(../shared/data is beside the repo only in CI and dev machines)")
    samples, rate = read_wav(wav)
    return samples, rate, rttm_turns(rttm)


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.int16)


def wait_encoders(system: System, timeout: float = 180) -> list[dict]:
    """Every worker's /health speakers status once loading ended."""
    statuses: list[dict] = []
    for i in range(len(system.workers)):
        def loaded(i: int = i) -> bool:
            reply = call(f"{system.worker_url(i)}/health")
            if reply.status == 200 and reply.body["speakers"]["state"] != "loading":
                statuses.append(reply.body["speakers"])
                return True
            return False
        wait_until(loaded, timeout, f"worker {i} to load its speaker encoder", interval=0.2)
    return statuses


@contextmanager
def ge2e_system(root: Path, n_workers: int = 3, worker_args: Sequence[str] = (),
                balancer_args: Sequence[str] = ()) -> Iterator[System]:
    """A balancer and GE2E workers as real processes, with a voiceprint store
    and activity log of their own under root (the defaults are in the
    checkout), started and their encoders loaded; stopped afterwards."""
    system = make_system(root, n_workers=n_workers, balancer_args=list(balancer_args), worker_args=[
        "--encoder", "ge2e", "--store", str(root / "voiceprints.db"), "--activity-log", str(root / "activity.log"),
        *worker_args])
    try:
        system.start()
        wait_encoders(system)
        yield system
    finally:
        system.stop()


def stream(system: System, account: str, samples: np.ndarray, rate: int, frame_seconds: float = 0.1) -> list[dict]:
    """Send samples as frames over the balancer's WebSocket, one at a time,
    each answered before the next (fast pace); the replies in order."""
    replies = stream_frames(system.ws_url, account, samples, rate, frame_seconds)
    for reply in replies:
        assert "error" not in reply, reply
    return replies


def activity(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ge2e_graph() -> Path:
    """The GE2E graph in MODELS, exported first if it is not there yet."""
    from worker.speakers.encoders import Unavailable
    from worker.speakers.loader import load_onnx_encoder
    loaded = load_onnx_encoder("ge2e", model_dir=MODELS)
    assert not isinstance(loaded, Unavailable), loaded.reason
    return MODELS / "onnx" / loaded.info["graph"]


def uninstalled(*packages: str) -> str:
    """Python source that, run first in a fresh interpreter, makes packages
    look uninstalled to everything after it: importing them fails and
    importlib.util.find_spec finds nothing (as without them on the path).
    (Not sys.modules[name] = None: scipy takes any 'torch' key there for torch.)"""
    return (
        "import importlib.machinery, sys\n"
        f"HIDDEN = {set(packages)!r}\n"
        "class Hiding(importlib.machinery.PathFinder):\n"
        "    @classmethod\n"
        "    def find_spec(cls, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in HIDDEN:\n"
        "            return None\n"
        "        return super().find_spec(name, path, target)\n"
        "sys.meta_path[:] = [Hiding if f is importlib.machinery.PathFinder else f for f in sys.meta_path]\n"
    )


DISABLED = ("speaker verification is disabled on this worker (--encoder none); "
            "start the workers with --encoder ecapa or --encoder ge2e")


def worker_config(root: Path, encoder: str, **settings: Any) -> WorkerConfig:
    """An in-process worker's settings with its files under root."""
    return WorkerConfig(encoder=encoder, model_dir=str(MODELS), log_dir=str(root / "logs"),
                        store_path=str(root / "voiceprints.db"), activity_log=str(root / "activity.log"), **settings)


def ready_app(config: WorkerConfig) -> Flask:
    """The worker's Flask app once its speaker encoder has loaded (the GE2E
    graph exported first if need be, once for all the speaker tests)."""
    if config.encoder == "ge2e":
        ge2e_graph()
    app = create_app(config)
    worker: Worker = app.extensions[EXTENSION]
    engine = worker.speakers.engine
    assert engine is not None and engine.wait_loaded(300) and engine.ready, engine.status()
    return app


# The fixtures' workers take uploads of up to this much (lower than the
# defaults, so a test of the limits stays small).
MAX_UPLOAD_SECONDS = 30
MAX_UPLOAD_BYTES = 4 << 20


def api_config(root: Path, encoder: str) -> WorkerConfig:
    return worker_config(root, encoder, max_upload_seconds=MAX_UPLOAD_SECONDS, max_upload_bytes=MAX_UPLOAD_BYTES)


def error_of(reply: Any) -> str:
    """The error message of a Flask test client's reply, which must be JSON."""
    assert reply.is_json, reply.data[:200]
    return reply.get_json()["error"]
