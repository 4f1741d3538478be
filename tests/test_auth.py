"""Real processes: the balancer's token (AUTH_TOKEN) refuses clients without
it, and the worker secret (WORKER_SECRET, given to the balancer and the
worker alike) refuses anyone but a balancer at the worker: a direct call
without it is answered 401 and changes nothing, a balancer with none or the
wrong one takes the worker out of its ring and says why, and a worker on a
non-loopback address does not start without it unless --insecure says so.
Every path and form of the token: test_balancer_http.py; the secret's check
and every worker route: test_worker_auth.py (in process)."""
from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import soundfile as sf

from speaker_helpers import Reply, call, ge2e_graph, read_wav, wait_encoders
from voicestream.batch import CLOSE_PATH, CONTENT_TYPE, PATH, FrameMeta, encode_batch, encode_close
from voicestream.wav import encode_wav, split_frames
from voicetools.cluster import Process, System, free_port, http_ok, make_system, wait_until
from voicetools.paths import REPO

pytestmark = pytest.mark.integration

TOKEN = "s3cret-t0ken"
SECRET = "worker-secret-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
STAMP_2000 = 946_684_800_000_000  # 2000-01-01: the forged line


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A balancer with a client token and a GE2E worker, both given the worker secret."""
    ge2e_graph()
    root = tmp_path_factory.mktemp("auth")
    system = make_system(root, n_workers=1, env={"AUTH_TOKEN": TOKEN, "WORKER_SECRET": SECRET}, worker_args=[
        "--encoder", "ge2e", "--store", str(root / "voiceprints.db"), "--activity-log", str(root / "activity.log")])
    try:
        system.start()
        wait_encoders(system)
        yield system
    finally:
        system.stop()


@pytest.fixture(scope="module")
def frame(speech) -> bytes:
    samples, rate = sf.read(speech("sample2.wav"), dtype="int16")
    return encode_wav(samples[rate:rate + rate // 10], rate)


@pytest.fixture(scope="module")
def enrollment() -> bytes:
    samples, rate = read_wav(REPO / "data" / "enroll" / "us_female.wav")
    return encode_wav(samples[:8 * rate], rate)


async def ws_status(url: str, headers: dict | None = None, frame: bytes | None = None) -> int | dict:
    """401/... for a refused handshake, else the reply to one frame."""
    async with aiohttp.ClientSession(headers=headers) as session:
        try:
            async with session.ws_connect(url) as ws:
                await ws.send_str("ACCOUNTCODE=authed")
                await ws.send_bytes(frame)
                return await ws.receive_json(timeout=30)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def http_status(method: str, url: str, headers: dict | None = None, **kwargs) -> int:
    async with aiohttp.ClientSession(headers=headers) as session, session.request(method, url, **kwargs) as resp:
        body = await resp.json()
        if resp.status == 401:
            assert body["error"].startswith("missing or wrong token")
        return resp.status


def test_the_token_from_the_environment_guards_the_system(guarded, frame):
    assert asyncio.run(ws_status(guarded.ws_url, frame=frame)) == 401
    assert asyncio.run(ws_status(guarded.ws_url, {"Authorization": "Bearer wrong"}, frame)) == 401
    for reply in (asyncio.run(ws_status(guarded.ws_url, BEARER, frame)),
                  asyncio.run(ws_status(f"{guarded.ws_url}?token={TOKEN}", frame=frame))):
        assert isinstance(reply, dict) and "error" not in reply, reply
    assert len(guarded.account_log("authed")) == 2
    ingest = {"json": {"ACCOUNTCODE": "authed_http", "data": [0] * 800}}
    assert asyncio.run(http_status("POST", guarded.url + "/", **ingest)) == 401
    assert asyncio.run(http_status("POST", guarded.url + "/", BEARER, **ingest)) == 200
    assert asyncio.run(http_status("GET", guarded.url + "/health")) == 200  # open: monitors poll it
    assert "rejected unauthenticated POST / from 127.0.0.1" in guarded.balancer.output()


def raw_call(url: str, method: str, path: str, header: bytes = b"", body: bytes = b"",
             content_type: str = "application/octet-stream") -> tuple[int, dict, str]:
    """One request with a header of raw bytes (no client library sends bytes
    that are not UTF-8); the status, the JSON body and the raw head."""
    host, port = url.removeprefix("http://").split(":")
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(head + (header + b"\r\n" if header else b"") + b"\r\n" + body)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    reply_head, _, reply_body = data.partition(b"\r\n\r\n")
    return int(reply_head.split()[1]), json.loads(reply_body), reply_head.decode("latin-1")


@pytest.mark.parametrize("header", [b"Authorization: Bearer \xff\xfe", b"Authorization: Bearer \xed\xa0\x80",
                                    b"Authorization: \xff Bearer"])
def test_a_token_that_is_not_utf8_is_refused_not_an_error(guarded, header):
    status, body, _ = raw_call(guarded.url, "GET", "/accounts/x/speakers", header)
    assert status == 401 and body["error"].startswith("missing or wrong token"), body


def test_workers_listen_on_loopback_only(guarded):
    from worker.config import WorkerConfig
    assert WorkerConfig().host == "127.0.0.1"
    import psutil
    pids = {p.pid for w in guarded.workers
            for p in [psutil.Process(w.popen.pid), *psutil.Process(w.popen.pid).children()]}
    listening = [c.laddr for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.pid in pids]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)


# --- the worker secret ---------------------------------------------------------

@pytest.fixture(scope="module")
def victim(guarded: System, enrollment: bytes) -> str:
    """An account with a speaker enrolled and a stream logged, all through the
    balancer (which sends the secret): what a forged call would change."""
    account = "victim"
    enrolled = call_balancer(guarded, f"/accounts/{account}/speakers/alice", "POST", enrollment)
    assert enrolled.status == 201, enrolled.body
    frames = stream_and_close(guarded, account, 10)
    assert len(frames) == 10 and all("error" not in r for r in frames), frames
    return account


def call_balancer(system: System, path: str, method: str = "GET", data: bytes | None = None) -> Reply:
    """A REST call through the balancer with the client token."""
    request = urllib.request.Request(f"{system.url}{path}", data=data, method=method,
                                     headers={**BEARER, "Content-Type": "audio/wav"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return Reply(resp.status, json.load(resp), dict(resp.headers))
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, json.load(exc), dict(exc.headers))


def speech(n: int) -> list[bytes]:
    samples, rate = read_wav(REPO / "data" / "us_female_16k.wav")
    return split_frames(samples[:rate * n // 10], rate)[:n]


def stream_and_close(system: System, account: str, n: int) -> list[dict]:
    """n frames over the balancer's WebSocket, then CLOSE: the frames' replies
    and, last, the account's StreamClosed."""
    async def go() -> list[dict]:
        replies = []
        async with aiohttp.ClientSession(headers=BEARER) as session, session.ws_connect(system.ws_url) as ws:
            for wav in speech(n):
                await ws.send_str(f"ACCOUNTCODE={account}")
                await ws.send_bytes(wav)
                replies.append(await ws.receive_json(timeout=30))
            await ws.send_str("CLOSE")
            closed = await ws.receive_json(timeout=30)
        assert closed.get("account") == account and closed.get("closed") is True and "error" not in closed, closed
        return replies
    return asyncio.run(go())


def forged_calls(account: str, enrollment: bytes) -> list[tuple[str, str, bytes, str]]:
    """(method, path, body, content type) of what an attacker who reaches a
    worker would send: a line dated 2000-01-01 in the account's log, a close of
    its stream, a speaker of their own, the account's speakers deleted, its
    threshold changed, its segments and speakers read, the worker drained."""
    batch = encode_batch([(FrameMeta(account, "forged", 1, STAMP_2000), speech(1)[0])])
    return [("POST", PATH, batch, CONTENT_TYPE),
            ("POST", CLOSE_PATH, encode_close(account, "forged"), "application/json"),
            ("POST", f"/accounts/{account}/speakers/mallory", enrollment, "audio/wav"),
            ("DELETE", f"/accounts/{account}/speakers/alice", b"", "audio/wav"),
            ("DELETE", f"/accounts/{account}/speakers", b"", "audio/wav"),
            ("PUT", f"/accounts/{account}/settings", b'{"threshold": -1}', "application/json"),
            ("GET", f"/accounts/{account}/segments", b"", "application/json"),
            ("GET", f"/accounts/{account}/speakers?vector=1", b"", "application/json"),
            ("POST", "/drain", b"", "application/json")]


def record(system: System, account: str) -> dict[str, object]:
    """What a forged call could change: every frame log and segments file, the
    activity log, and (through the balancer) the account's voiceprints and settings."""
    files = [*system.log_dir.rglob("*"), system.root / "activity.log"]
    found: dict[str, object] = {str(path): path.read_bytes() for path in files if path.is_file()}
    for path in (f"/accounts/{account}/speakers?vector=1", f"/accounts/{account}/settings"):
        reply = call_balancer(system, path)
        assert reply.status == 200, reply.body
        found[path] = reply.body
    return found


@pytest.mark.parametrize("header,verdict", [
    (b"", "missing"), (b"Authorization: Basic " + SECRET.encode(), "missing"),
    (b"Authorization: Bearer wrong-secret-0123456789", "wrong"),
    (b"Authorization: Bearer " + SECRET[:-1].encode(), "wrong"),
    (b"Authorization: Bearer \xff\xfe" + SECRET.encode(), "wrong"),  # not UTF-8: 401, never 500
], ids=["none", "basic", "wrong", "prefix", "not-utf8"])
def test_a_direct_call_without_the_worker_secret_is_refused_and_changes_nothing(guarded, victim, enrollment,
                                                                                header, verdict):
    before = record(guarded, victim)
    for method, path, body, content_type in forged_calls(victim, enrollment):
        status, reply, head = raw_call(guarded.worker_url(0), method, path, header, body, content_type)
        assert status == 401, (method, path, reply)
        assert reply["error"].startswith(f"{verdict} worker secret: only a balancer may call this worker"), reply
        assert "www-authenticate: bearer" in head.lower()
    assert record(guarded, victim) == before, "a refused call changed something"
    health = call(f"{guarded.worker_url(0)}/health")
    assert health.status == 200 and health.body["status"] == "ok", "a refused /drain drained the worker"
    assert health.body["worker_secret"] == "missing"  # this call's own verdict: it sent none
    assert [s["name"] for s in before[f"/accounts/{victim}/speakers?vector=1"]["speakers"]] == ["alice"]
    assert "refused POST /frames/batch from 127.0.0.1" in guarded.workers[0].output()


def test_with_the_worker_secret_a_direct_call_is_served(guarded, victim):
    """What the balancer sends, sent by hand with the secret: frames are
    logged, the close answered, the record read."""
    stream, header = f"direct-{uuid.uuid4().hex}", f"Authorization: Bearer {SECRET}".encode()
    account = "direct"
    batch = encode_batch([(FrameMeta(account, stream, i + 1, STAMP_2000 + i), wav) for i, wav in enumerate(speech(3))])
    status, reply, _ = raw_call(guarded.worker_url(0), "POST", PATH, header, batch, CONTENT_TYPE)
    assert status == 200 and reply["statuses"] == [200, 200, 200], reply
    assert [line[:26] for line in guarded.account_log(account)] == [
        "2000-01-01 00:00:00.000000", "2000-01-01 00:00:00.000001", "2000-01-01 00:00:00.000002"]
    status, reply, _ = raw_call(guarded.worker_url(0), "POST", CLOSE_PATH, header, encode_close(account, stream),
                                "application/json")
    assert status == 200 and "events" in reply, reply
    status, reply, _ = raw_call(guarded.worker_url(0), "GET", f"/accounts/{victim}/speakers", header)
    assert status == 200 and [s["name"] for s in reply["speakers"]] == ["alice"], reply
    health = call_worker_health(guarded.worker_url(0), header)
    assert health["worker_secret"] == "accepted"


def call_worker_health(url: str, header: bytes) -> dict:
    status, reply, _ = raw_call(url, "GET", "/health", header)
    assert status == 200, reply
    return reply


def test_the_balancer_sends_the_secret_with_frames_closes_and_rest(guarded, enrollment):
    """The worker requires it, and every kind of request through the balancer
    is served: enroll, list, delete (the proxy), frames and CLOSE (the links,
    the closer), /health (the poll keeps the worker in the ring)."""
    account = "through"
    assert call_balancer(guarded, f"/accounts/{account}/speakers/bob", "POST", enrollment).status == 201
    replies = stream_and_close(guarded, account, 12)
    assert all("error" not in r for r in replies), replies
    assert len(guarded.account_log(account)) == 12
    assert call_balancer(guarded, f"/accounts/{account}/speakers/bob", "DELETE").status == 200
    assert call_balancer(guarded, f"/accounts/{account}/speakers").body["speakers"] == []
    balancer_health = call(f"{guarded.url}/health").body
    assert balancer_health["workers"] == {guarded.worker_url(0): "up"}


@pytest.mark.parametrize("secret,why", [
    ("another-secret-0123456789", "this balancer's worker secret is not the worker's"),
    ("", "it requires a worker secret and this balancer sends none"),
], ids=["wrong", "none"])
def test_a_balancer_without_the_workers_secret_keeps_it_out_of_its_ring_and_says_why(guarded, tmp_path, secret, why):
    port = free_port()
    env = {k: v for k, v in guarded._env().items() if k not in ("WORKER_SECRET", "AUTH_TOKEN")}
    env |= {"WORKER_SECRET": secret} if secret else {}
    balancer = Process("balancer", [sys.executable, "-m", "balancer", "--host", "127.0.0.1", "--port", str(port),
                                    "--workers", guarded.worker_url(0), "--health-interval", "0.2"],
                       tmp_path / "balancer.out", env)
    balancer.start()
    try:
        wait_until(lambda: why in balancer.output() or not balancer.alive(), 30, "the balancer to say why")
        assert f"worker {guarded.worker_url(0)} turns this balancer away (401 on every frame): {why}" \
            in balancer.output()
        health = call(f"http://127.0.0.1:{port}/health")
        assert health.status == 503 and health.body["workers"] == {guarded.worker_url(0): "down"}, health.body
        reply = asyncio.run(one_frame(f"ws://127.0.0.1:{port}/ws", "misconfigured"))
        assert "error" in reply and guarded.account_log("misconfigured") == [], reply
    finally:
        balancer.terminate()


async def one_frame(url: str, account: str) -> dict:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str(f"ACCOUNTCODE={account}")
        await ws.send_bytes(speech(1)[0])
        return await ws.receive_json(timeout=30)


# --- a worker beyond loopback --------------------------------------------------

def worker_process(tmp_path: Path, port: int, args: list[str], env: dict[str, str]) -> Process:
    base = {k: v for k, v in make_system(tmp_path)._env().items() if k not in ("WORKER_SECRET", "WORKER_INSECURE")}
    return Process(f"worker-{port}", [sys.executable, "-m", "worker", "--host", "0.0.0.0", "--port", str(port),
                                      "--encoder", "none", "--log-dir", str(tmp_path / "logs"), *args],
                   tmp_path / f"worker-{port}.out", {**base, **env})


def test_a_worker_on_every_address_refuses_to_start_without_the_secret(tmp_path):
    port = free_port()
    worker = worker_process(tmp_path, port, [], {})
    worker.start()
    assert worker.popen is not None
    assert worker.popen.wait(60) == 2
    lines = worker.output().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "python -m worker: refusing to listen on 0.0.0.0 without a worker secret"), lines
    assert "WORKER_SECRET" in lines[0] and "--insecure" in lines[0]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.parametrize("args,env", [(["--insecure"], {}), ([], {"WORKER_INSECURE": "1"})], ids=["flag", "env"])
def test_with_insecure_it_starts_open_and_warns(tmp_path, args, env):
    port = free_port()
    worker = worker_process(tmp_path, port, args, env)
    worker.start()
    try:
        wait_until(lambda: worker_up(worker, port), 120, "the insecure worker's /health")
        assert f"python -m worker: WARNING: listening on 0.0.0.0:{port} without a worker secret (--insecure)" \
            in worker.output()
        status, reply, _ = raw_call(f"http://127.0.0.1:{port}", "GET", "/accounts/acme/segments")
        assert status == 200, reply  # open, as it said
    finally:
        assert worker.terminate() == 0


def worker_up(worker: Process, port: int) -> bool:
    if not worker.alive():
        raise RuntimeError(f"{worker.name} exited:\n{worker.output()[-3000:]}")
    return http_ok(f"http://127.0.0.1:{port}/health")


def test_with_the_secret_it_starts_and_its_drain_hook_sends_the_secret(tmp_path):
    """On 0.0.0.0 with WORKER_SECRET: it starts, refuses callers without it,
    and its preStop hook (python -m worker.drain, which runs with the
    container's environment) drains it only with the secret."""
    port = free_port()
    worker = worker_process(tmp_path, port, [], {"WORKER_SECRET": SECRET})
    worker.start()
    try:
        wait_until(lambda: worker_up(worker, port), 120, "the worker's /health")
        assert "WARNING" not in worker.output()
        assert raw_call(f"http://127.0.0.1:{port}", "GET", "/accounts/acme/segments")[0] == 401
        base = {k: v for k, v in worker.env.items() if k != "WORKER_SECRET"}
        drain = [sys.executable, "-m", "worker.drain", "--port", str(port), "--wait", "0"]
        refused = subprocess.run(drain, cwd=REPO, env=base, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert "refused the drain (401: missing worker secret" in refused.stderr, refused.stderr
        assert http_ok(f"http://127.0.0.1:{port}/health"), "not drained"
        taken = subprocess.run(drain, cwd=REPO, env={**base, "WORKER_SECRET": SECRET}, capture_output=True,
                               text=True, timeout=60)
        assert taken.returncode == 0, taken.stderr
        assert json.loads(taken.stdout) == {"status": "draining", "port": port}
        assert call(f"http://127.0.0.1:{port}/health").status == 503
    finally:
        worker.terminate()
