"""Start the real system (workers + balancer) as processes on free ports:
used by the integration tests and by the bench, faults, footprint and
conversation tools. The processes run in the checkout (REPO), as a user
starts them there: relative defaults such as models/ are the checkout's."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from voicestream.wav import encode_wav
from voicestream.worker_secret import ENVIRONMENT as SECRET_ENV
from voicestream.worker_secret import authorization
from voicetools.paths import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll check every interval seconds until it is true; TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@dataclass
class Process:
    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str]
    popen: subprocess.Popen | None = None
    cwd: Path = REPO  # a "host" of a multi-host test runs in a directory of its own

    def start(self) -> None:
        # Its own session: kill/terminate reach the whole group (gunicorn
        # master and worker) and a Ctrl-C in the terminal reaches none of it.
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.args, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)

    @property
    def pid(self) -> int:
        """The process's pid (its group's too: it leads its own session)."""
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, reap: bool = True) -> None:
        """kill -9 the whole process group (gunicorn master and its worker),
        and wait for the exit unless reap is False."""
        if self.popen is not None and self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
            if reap:
                self.popen.wait()

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM the process group and wait for the exit (kill -9 after
        timeout); the exit code, 0 if it never started."""
        if self.popen is not None and self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode if self.popen else 0

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class System:
    """Three (or n) workers and one balancer, as a user runs them."""
    root: Path
    worker_ports: list[int]
    balancer_port: int
    worker_args: list[str] = field(default_factory=list)
    balancer_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workers: list[Process] = field(default_factory=list)
    balancer: Process | None = None

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.balancer_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.balancer_port}/ws"

    def worker_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.worker_ports[i]}"

    def worker_headers(self) -> dict[str, str]:
        """What a direct call to a worker sends to be taken for a balancer:
        the worker secret the processes' environment holds (WORKER_SECRET
        reaches workers and balancer alike), if any."""
        return authorization(self._env().get(SECRET_ENV, ""))

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}

    def _worker(self, i: int) -> Process:
        port = self.worker_ports[i]
        args = [sys.executable, "-m", "worker", "--port", str(port), "--log-dir", str(self.log_dir),
                *self.worker_args]
        return Process(f"worker-{port}", args, self.root / f"worker-{port}.out", self._env())

    def start(self, timeout: float = 120) -> System:
        """Start every worker and the balancer, and wait until the balancer
        sees every worker up. On failure, whatever started is stopped."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.workers = [self._worker(i) for i in range(len(self.worker_ports))]
        try:
            for w in self.workers:
                w.start()
            workers = ",".join(self.worker_url(i) for i in range(len(self.worker_ports)))
            self.balancer = Process("balancer", [sys.executable, "-m", "balancer", "--host", "127.0.0.1",
                                                 "--port", str(self.balancer_port), "--workers", workers,
                                                 "--health-interval", "0.2", *self.balancer_args],
                                    self.root / "balancer.out", self._env())
            self.balancer.start()
            for i in range(len(self.workers)):
                self.wait_worker(i, timeout)
            self.wait_balancer_sees_all(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_worker(self, i: int, timeout: float = 120) -> None:
        w = self.workers[i]

        def up() -> bool:
            if not w.alive():
                raise RuntimeError(f"{w.name} exited:\n{w.output()[-3000:]}")
            return http_ok(f"{self.worker_url(i)}/health")
        wait_until(up, timeout, f"{w.name} /health")

    def wait_balancer_sees_all(self, timeout: float = 30) -> None:
        balancer = self.balancer
        if balancer is None:
            raise RuntimeError("the balancer was never started")

        def all_up() -> bool:
            if not balancer.alive():
                raise RuntimeError(f"balancer exited:\n{balancer.output()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                    return all(s == "up" for s in json.load(resp)["workers"].values())
            except (urllib.error.URLError, OSError, ValueError):
                return False
        wait_until(all_up, timeout, "the balancer to see every worker up")

    def restart_worker(self, i: int, timeout: float = 120) -> None:
        self.workers[i].kill()
        self.workers[i] = self._worker(i)
        self.workers[i].start()
        self.wait_worker(i, timeout)

    def stop(self) -> None:
        for p in [self.balancer, *self.workers]:
            if p is not None:
                p.terminate()

    def account_log(self, account: str) -> list[str]:
        path = self.log_dir / f"{account}.txt"
        return path.read_text().splitlines() if path.exists() else []


def make_system(root: Path, n_workers: int = 3, worker_args: list[str] | None = None,
                balancer_args: list[str] | None = None, env: dict[str, str] | None = None) -> System:
    """A system on free ports under root, not started yet (System.start)."""
    return System(root=root, worker_ports=[free_port() for _ in range(n_workers)], balancer_port=free_port(),
                  worker_args=list(worker_args or []), balancer_args=list(balancer_args or []), env=dict(env or {}))


def stream_frames(url: str, account: str, samples: np.ndarray, rate: int, frame_seconds: float = 0.1,
                  timeout: float = 60.0) -> list[dict]:
    """samples as frames over one WebSocket to a balancer at url (ws://...),
    each sent once the previous one is answered (as fast as replies come); the
    replies in order, errors included: the caller decides what one means."""
    return asyncio.run(_stream_frames(url, account, samples, rate, frame_seconds, timeout))


async def _stream_frames(url: str, account: str, samples: np.ndarray, rate: int, frame_seconds: float,
                         timeout: float) -> list[dict]:
    n = int(frame_seconds * rate)
    replies = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for start in range(0, len(samples) - n + 1, n):
            await ws.send_str(f"ACCOUNTCODE={account}")
            await ws.send_bytes(encode_wav(samples[start:start + n], rate))
            replies.append(await ws.receive_json(timeout=timeout))
        await ws.send_str("CLOSE")
    return replies
