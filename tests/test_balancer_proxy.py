"""The REST proxy in-process: paths and accounts checked at the balancer,
bodies limited, the account's worker chosen, and a worker failing at any
point of a request answered with JSON (never sent twice)."""
from __future__ import annotations

import asyncio

import pytest
from yarl import URL

from balancer.routing import rank_workers
from balancer_fakes import balancer, closed_port_url, dying_worker, fake_workers


def account_first_on(urls: list[str], first: str) -> str:
    """An account whose first rendezvous choice among urls is first."""
    return next(a for a in (f"acct{i}" for i in range(1000)) if rank_workers(a, urls)[0] == first)


def test_a_call_goes_to_the_accounts_worker_with_its_query_and_body():
    async def go():
        async with fake_workers(3) as workers, balancer(workers) as client:
            urls = [w.url for w in workers]
            owner = next(w for w in workers if w.url == rank_workers("acme", urls)[0])
            async with client.post("/accounts/acme/speakers/alice?replace=1", data=b"RIFF-upload",
                                   headers={"Content-Type": "audio/wav"}) as resp:
                return resp.status, await resp.json(), owner
    status, reply, owner = asyncio.run(go())
    assert status == 200
    assert reply == {"worker": owner.port, "method": "POST", "path": "/accounts/acme/speakers/alice?replace=1",
                     "bytes": 11}
    assert owner.requests == [("POST", "/accounts/acme/speakers/alice?replace=1", b"RIFF-upload")]


def test_the_workers_status_and_body_come_back_as_they_are():
    async def go():
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            worker.rest_status = 404
            async with client.get("/accounts/acme/speakers/bob") as resp:
                return resp.status, await resp.json()
    status, reply = asyncio.run(go())
    assert status == 404 and reply["path"] == "/accounts/acme/speakers/bob"


@pytest.mark.parametrize("path", ["/accounts/acme/%2e%2e/%2e%2e/frames", "/accounts/acme/../../frames",
                                  "/accounts/acme/speakers/%2E%2E%2F%2E%2E%2Fframes", "/accounts/acme/a//b"])
def test_rest_paths_cannot_leave_the_account(path):
    # Forwarded as given, '..' segments were resolved by the HTTP client into
    # the worker's own /frames (or any other worker path).
    async def go():
        async with fake_workers(1) as (worker,), balancer([worker]) as client:
            async with client.session.post(URL(str(client.make_url("")).rstrip("/") + path, encoded=True),
                                           data=b"") as resp:
                return resp.status, await resp.json(), worker
    status, reply, worker = asyncio.run(go())
    assert status == 400 and reply["error"].startswith("invalid path")
    assert worker.requests == [] and worker.frames == []


def test_an_invalid_account_code_never_reaches_a_worker():
    async def go():
        async with fake_workers(1) as (worker,), balancer([worker], max_account_length=12) as client:
            async with client.get("/accounts/abcdefghijklm/speakers") as resp:
                return resp.status, await resp.json(), worker
    status, reply, worker = asyncio.run(go())
    assert status == 400
    assert reply == {"error": "invalid ACCOUNTCODE 'abcdefghijklm': use 1-12 characters of A-Z a-z 0-9 _ -"}
    assert worker.requests == []


def test_rest_bodies_have_their_own_larger_limit():
    async def go():
        async with fake_workers(1) as (worker,), \
                balancer([worker], max_message_bytes=50000, max_upload_bytes=100000) as client:
            out = []
            for path, body in [("/", b"{" + b" " * 60000 + b"}"), ("/accounts/big/speakers/alice", b"\0" * 150000),
                               ("/accounts/big/speakers/alice", b"\0" * 60000)]:
                async with client.post(path, data=body) as resp:
                    out.append((resp.status, await resp.json()))
            return out, worker
    (ingest, upload, upload_ok), worker = asyncio.run(go())
    assert ingest[0] == 413 and ingest[1]["error"].startswith("request body too large")
    assert upload[0] == 413 and upload[1]["error"].startswith("request body too large")
    assert upload_ok == (200, {"worker": worker.port, "method": "POST", "path": "/accounts/big/speakers/alice",
                               "bytes": 60000})
    assert [(m, p, len(b)) for m, p, b in worker.requests] == [("POST", "/accounts/big/speakers/alice", 60000)]


def test_a_refused_connection_tries_the_next_worker():
    async def go():
        async with fake_workers(2) as workers:
            urls = [w.url for w in workers]
            account = account_first_on(urls, urls[0])
            # No poll during the test: only the refused connection takes the worker out.
            async with balancer(workers, health_interval=3600) as client:
                await workers[0].close()
                async with client.get(f"/accounts/{account}/speakers") as resp:
                    proxied = resp.status, await resp.json()
                async with client.get("/health") as resp:
                    health = await resp.json()
            return proxied, health, workers
    (status, reply), health, workers = asyncio.run(go())
    assert status == 200 and reply["worker"] == workers[1].port
    assert health["workers"] == {workers[0].url: "down", workers[1].url: "up"}


def test_no_worker_up_is_a_json_503():
    async def go():
        async with balancer([closed_port_url()]) as client:
            async with client.post("/embed", data=b"RIFF") as resp:
                return resp.status, await resp.json()
    assert asyncio.run(go()) == (503, {"error": "no worker available: every worker is down, try again shortly"})


@pytest.mark.parametrize("when", ["after-request", "mid-body"])
def test_a_worker_that_dies_mid_request_is_a_json_502_and_the_request_is_not_sent_again(when):
    async def go():
        async with dying_worker(when) as dying, fake_workers(1) as (other,):
            account = account_first_on([dying.url, other.url], dying.url)
            async with balancer([dying.url, other]) as client:
                async with client.post(f"/accounts/{account}/speakers/alice", data=b"RIFF" * 100) as resp:
                    return resp.status, resp.content_type, await resp.json(), dying, other
    status, content_type, reply, dying, other = asyncio.run(go())
    assert (status, content_type) == (502, "application/json")
    assert reply["error"].startswith("the worker failed in the middle of the request")
    assert "it may have been applied" in reply["error"]
    # An enrollment may have been stored before the worker died: never sent twice.
    assert dying.requests == 1 and other.requests == []


def test_the_clients_token_stays_at_the_balancer():
    async def go():
        async with fake_workers(1) as (worker,), balancer([worker], token="t0k") as client:
            async with client.get("/accounts/acme/speakers?token=t0k&vector=1") as resp:
                await resp.read()
            async with client.get("/accounts/acme/speakers", headers={"Authorization": "Bearer t0k"}) as resp:
                await resp.read()
            return worker
    worker = asyncio.run(go())
    assert worker.requests == [("GET", "/accounts/acme/speakers?vector=1", b""),
                               ("GET", "/accounts/acme/speakers", b"")]
    assert all("Authorization" not in headers for headers in worker.headers)


def test_the_worker_gets_the_worker_secret_never_the_clients_authorization():
    """With --worker-secret the session's own Authorization reaches the worker;
    whatever a client sends in that header (its token, or a guess at the
    secret) stays at the balancer."""
    secret = "worker-secret-0123456789"

    async def go(**options):
        async with fake_workers(1) as (worker,), balancer([worker], worker_secret=secret, **options) as client:
            for headers in ({"Authorization": "Bearer t0k"}, {"Authorization": "Bearer forged-secret-0123456789"}):
                async with client.get("/accounts/acme/speakers", headers=headers) as resp:
                    await resp.read()
            return worker
    open_balancer, with_token = asyncio.run(go()), asyncio.run(go(token="t0k"))
    assert [headers["Authorization"] for headers in open_balancer.headers] == [f"Bearer {secret}"] * 2
    # With a token, the guess is the balancer's 401; the token's call goes on with the secret.
    assert [headers["Authorization"] for headers in with_token.headers] == [f"Bearer {secret}"]
