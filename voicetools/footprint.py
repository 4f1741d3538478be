"""What one worker costs with each speaker encoder: memory and start-up time.

    .venv/bin/voicestream-footprint --encoder ge2e
    .venv/bin/voicestream-footprint --encoder ecapa --ecapa-source /models/spkrec-ecapa-voxceleb
    .venv/bin/voicestream-footprint --encoder ecapa --ecapa-source /tmp/full-ecapa --model-dir /tmp/m --runs 2

Starts one real worker (``python -m worker``, gunicorn) on a free port, waits
until it serves /health and until its speaker encoder is ready, embeds real
WAVs through /embed (alone, then 16 at once, which the worker batches) and
reads the gunicorn child's memory with psutil: RSS once the encoder is ready
and after the embeddings, USS (pages only it holds) and peak RSS (VmHWM).
Also says whether torch is mapped into the process (/proc/<pid>/maps).
Seconds are from starting the process to /health answering (serving_s) and
to the encoder being ready (encoder_ready_s).

Each run starts a fresh worker with the same --model-dir: with --runs 2 and an
empty model dir, the first run shows a cold start (the ONNX export runs) and
the second a warm one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import soundfile as sf

from voicestream.wav import encode_wav
from voicetools.bench.processes import hwm_bytes
from voicetools.cluster import Process, free_port, http_ok, wait_until
from voicetools.paths import DATA

PROG = "voicestream-footprint"
MIB = 1 << 20


def gunicorn_child(popen_pid: int) -> psutil.Process:
    """The serving process: the one gunicorn worker under the master."""
    children = psutil.Process(popen_pid).children()
    if len(children) != 1:
        raise RuntimeError(f"expected one gunicorn worker under {popen_pid}, found {children}")
    return children[0]


def torch_mapped(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def get_json(url: str, data: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "audio/wav"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def wav_slice(name: str, seconds: float) -> bytes:
    """The first seconds of data/<name> (a mono sample) as WAV bytes (0: all of it)."""
    samples, rate = sf.read(DATA / name, dtype="int16")
    return encode_wav(samples[:int(seconds * rate)] if seconds else samples, rate)


def exercise(url: str, concurrent: int = 16) -> None:
    """Embed real speech: a short, a medium and a whole file one at a time,
    then `concurrent` 2.5 s requests at once, which the engine embeds as
    batches (up to its 32 windows)."""
    def embed(name: str, seconds: float) -> None:
        status, body = get_json(f"{url}/embed", wav_slice(name, seconds))
        if status != 200:
            raise RuntimeError(f"/embed answered {status}: {body}")
    for name, seconds in (("gb_male_16k.wav", 2.5), ("us_female_16k.wav", 5), ("gb_male_16k.wav", 0)):
        embed(name, seconds)
    with ThreadPoolExecutor(concurrent) as pool:
        list(pool.map(lambda i: embed(("gb_male_16k.wav", "us_female_16k.wav")[i % 2], 2.5), range(concurrent)))


def run_once(root: Path, worker_args: list[str]) -> dict:
    port = free_port()
    args = [sys.executable, "-m", "worker", "--port", str(port), "--log-dir", str(root / "logs"),
            "--store", str(root / "voiceprints.db"), "--activity-log", str(root / "activity.log"), *worker_args]
    # Offline hub: a missing model fails fast instead of trying the network.
    worker = Process(f"worker-{port}", args, root / f"worker-{port}.out", {**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    worker.start()
    try:
        def serving() -> bool:
            if not worker.alive():
                raise RuntimeError(f"worker exited:\n{worker.output()[-3000:]}")
            return http_ok(f"{url}/health")
        wait_until(serving, 300, "/health", interval=0.02)
        serving_s = time.perf_counter() - started
        status: dict = {}

        def loaded() -> bool:
            status.update(get_json(f"{url}/health")[1]["speakers"])
            return status["state"] != "loading"
        wait_until(loaded, 600, "the speaker encoder", interval=0.05)
        ready_s = time.perf_counter() - started
        child = gunicorn_child(worker.pid)
        loaded_rss = child.memory_info().rss
        if status["state"] == "ready":
            exercise(url)
        mem = child.memory_full_info()
        return {"encoder_state": status["state"], "reason": status.get("reason", ""),
                "serving_s": round(serving_s, 2), "encoder_ready_s": round(ready_s, 2),
                "rss_loaded_mib": round(loaded_rss / MIB, 1), "rss_mib": round(mem.rss / MIB, 1),
                "uss_mib": round(mem.uss / MIB, 1),
                "peak_rss_mib": round((hwm_bytes(child.pid) or 0) / MIB, 1), "torch_mapped": torch_mapped(child.pid),
                "speakers": {k: v for k, v in status.items() if k not in ("reason",)}}
    finally:
        worker.terminate()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", choices=("ge2e", "ecapa", "none"), default="ge2e")
    p.add_argument("--ecapa-source", help="hub id or local directory of the ECAPA model")
    p.add_argument("--model-dir", type=Path, help="the worker's --model-dir (default: a fresh temporary one)")
    p.add_argument("--runs", type=int, default=1, help="workers started one after another with the same model dir")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "logs").mkdir()
        model_dir = a.model_dir or root / "models"
        worker_args = ["--encoder", a.encoder, "--model-dir", str(model_dir)]
        if a.ecapa_source:
            worker_args += ["--ecapa-source", a.ecapa_source]
        for i in range(a.runs):
            result = run_once(root, worker_args)
            print(json.dumps({"run": i + 1, "encoder": a.encoder, **result}), flush=True)
        if a.model_dir is None:
            shutil.rmtree(model_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
