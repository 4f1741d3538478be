"""The live system answers as its OpenAPI document says: a real balancer and
two GE2E workers, the document read from the balancer's /openapi.json.

Real recordings first: every operation's success and its documented refusals,
each answer checked against the document. Then schemathesis generates
requests from the document (bounded: a fixed seed, MAX_EXAMPLES per
operation) and checks that none gets a 500 or an answer the document does not
describe, and that the service still answers /health and a real frame
afterwards. The requests that found defects stay as tests of their own (a
generated run need not draw them again). docs/api.md says how to run
schemathesis with more examples.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from speaker_helpers import call, ge2e_graph, ge2e_system, read_wav
from test_api_docs import payload_validator
from voicestream.wav import encode_wav
from voicetools.cluster import System
from voicetools.paths import REPO

pytestmark = pytest.mark.integration

DATA = REPO / "data"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
# A bounded run: about 1,000 requests in 10-20 s on a shared 2-core machine.
MAX_EXAMPLES = 40
SEED = 20240501
RUN_TIMEOUT = 180  # seconds: a hard stop, far above a normal run
# How these tests send a raw WAV body: the document lists audio/wav too, which
# a worker reads the same way, but schemathesis serializes only this one.
OCTETS = "application/octet-stream"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    ge2e_graph()  # exported into models/ once if missing (about 30 s)
    with ge2e_system(tmp_path_factory.mktemp("schemathesis"), n_workers=2) as system:
        yield system


@pytest.fixture(scope="module")
def schema(live: System) -> Any:
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json")


def wav(name: str, start: float = 0.0, seconds: float | None = None) -> bytes:
    samples, rate = read_wav(DATA / name)
    end = None if seconds is None else int((start + seconds) * rate)
    return encode_wav(samples[int(start * rate):end], rate)


def answer(schema: Any, live: System, method: str, path: str, status: int, **case: Any) -> Any:
    """The JSON (or text) the live system answers, once its status and body
    are checked against the document."""
    operation = schema[path][method]
    request = operation.Case(**case)
    response = request.call(base_url=live.url)
    request.validate_response(response, checks=CHECKS)
    assert response.status_code == status, response.text
    try:
        return response.json()
    except ValueError:  # the console page
        return response.text


def test_real_requests_get_the_answers_the_document_describes(live: System, schema: Any):
    account = {"account": "openapi"}
    alice = {**account, "name": "alice"}
    voice = wav("gb_male_16k.wav")
    enrolled = answer(schema, live, "POST", "/accounts/{account}/speakers/{name}", 201, path_parameters=alice,
                      body=voice, media_type=OCTETS)
    assert enrolled["samples"] == 1
    again = answer(schema, live, "POST", "/accounts/{account}/speakers/{name}", 201, path_parameters=alice,
                   body={"file": wav("gb_male_16k.wav", 2.0)}, media_type="multipart/form-data")
    assert again["samples"] == 2
    listed = answer(schema, live, "GET", "/accounts/{account}/speakers", 200, path_parameters=account)
    assert [s["name"] for s in listed["speakers"]] == ["alice"]
    voiceprint = answer(schema, live, "GET", "/accounts/{account}/speakers/{name}", 200, path_parameters=alice,
                        query={"vector": "1"})
    verified = answer(schema, live, "POST", "/accounts/{account}/verify", 200, path_parameters=account,
                      body=wav("us_female_16k.wav"), media_type=OCTETS)
    assert verified["best"] == "alice" and verified["scores"].keys() == {"alice"}
    embedding = answer(schema, live, "POST", "/embed", 200, body=wav("us_male_8k.wav"), media_type=OCTETS)
    assert embedding["dim"] == 256
    compared = answer(schema, live, "POST", "/compare", 200, body={"a": voiceprint, "b": embedding},
                      media_type="application/json")
    assert -1 <= compared["score"] <= 1
    samples, rate = read_wav(DATA / "us_female_16k.wav")
    frame = {"ACCOUNTCODE": "openapi", "data": samples[rate:rate + rate // 10].tolist(), "sample_rate": rate}
    reply = answer(schema, live, "POST", "/", 200, body=frame, media_type="application/json")
    assert reply["account"] == "openapi" and reply["voice"] in (0, 1)
    answer(schema, live, "GET", "/", 200)
    answer(schema, live, "GET", "/health", 200)
    segments = answer(schema, live, "GET", "/accounts/{account}/segments", 200, path_parameters=account,
                      query={"limit": "10"})
    assert segments["account"] == "openapi" and isinstance(segments["segments"], list)

    # Refusals, each as documented.
    answer(schema, live, "POST", "/accounts/{account}/speakers/{name}", 422,
           path_parameters={**account, "name": "quiet"}, body=encode_wav([0] * 16000 * 4, 16000),
           media_type=OCTETS)
    answer(schema, live, "POST", "/embed", 400, body=b"RIFF but not a WAV", media_type=OCTETS)
    answer(schema, live, "POST", "/compare", 409, body={"a": voiceprint, "b": {**embedding, "encoder": "ecapa"}},
           media_type="application/json")
    answer(schema, live, "POST", "/", 400, body={"ACCOUNTCODE": "no spaces", "data": [0]},
           media_type="application/json")
    answer(schema, live, "GET", "/accounts/{account}/segments", 400, path_parameters=account,
           query={"since": "yesterday"})
    answer(schema, live, "DELETE", "/accounts/{account}/speakers/{name}", 200, path_parameters=alice)
    answer(schema, live, "GET", "/accounts/{account}/speakers/{name}", 404, path_parameters=alice)
    answer(schema, live, "POST", "/accounts/{account}/verify", 404, path_parameters=account,
           body=wav("us_female_16k.wav"), media_type=OCTETS)
    answer(schema, live, "DELETE", "/accounts/{account}/speakers", 200, path_parameters=account)


def test_a_multipart_part_without_a_name_is_a_400_not_a_500(live: System):
    # Found by schemathesis: the error message listing the parts joined a
    # part's name, None for 'Content-Disposition: form-data' without one.
    body = b"--BB\r\nContent-Disposition: form-data\r\n\r\nhello\r\n--BB--\r\n"
    for path in ("/embed", "/accounts/parts/speakers/bob", "/accounts/parts/verify"):
        reply = call(f"{live.url}{path}", "POST", body, "multipart/form-data; boundary=BB")
        assert reply.status == 400 and reply.body["error"].startswith("multipart body needs a 'file' part"), path


def test_compare_answers_vectors_of_any_size_with_a_400_or_their_true_cosine(live: System):
    # Found reading POST /compare against its document: a JSON integer past
    # the float range crashed np.asarray (500); finite values near 1e308
    # overflowed the norms, and the NaN score was clamped to 1.0.
    vectors = {"a": {"encoder": "ge2e", "model": "m", "vector": [0, 1]},
               "b": {"encoder": "ge2e", "model": "m", "vector": [1, 1]}}
    body = json.dumps(vectors).replace("[0, 1]", "[1" + "0" * 400 + ", 1]")  # 1e400, as an integer
    reply = call(f"{live.url}/compare", "POST", body.encode(), "application/json")
    assert reply.status == 400 and "'a.vector'" in reply.body["error"], reply
    orthogonal = {"a": {"encoder": "ge2e", "model": "m", "vector": [1e308, -1e308]},
                  "b": {"encoder": "ge2e", "model": "m", "vector": [1e308, 1e308]}}
    reply = call(f"{live.url}/compare", "POST", json.dumps(orthogonal).encode(), "application/json")
    assert reply.status == 200 and reply.body["score"] == 0.0, reply


def schemathesis_run(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
         "--checks", ",".join(check.__name__ for check in CHECKS),
         "--phases", "examples,coverage,fuzzing",  # stateful: the document declares no links
         "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
         "--generation-database", "none", "--request-timeout", "30", "--no-color",
         # One worker: hypothesis' lambda descriptions call ast.parse, which
         # CPython 3.11 can fail (SystemError) when threads parse at once.
         "--workers", "1"],
        cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT)


def real_frame(url: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            await ws.send_str("ACCOUNTCODE=afterwards")
            await ws.send_bytes(wav("us_female_16k.wav", 1.0, 0.1))
            return await ws.receive_json(timeout=30)
    return asyncio.run(go())


def test_generated_requests_get_no_500_and_only_documented_answers(live: System, tmp_path: Path):
    done = schemathesis_run(live.url, tmp_path)
    assert done.returncode == 0, f"schemathesis found problems (exit {done.returncode}):\n{done.stdout[-8000:]}" \
                                 f"\n{done.stderr[-2000:]}"
    assert "generated" in done.stdout and "passed" in done.stdout
    # Still serving: every worker alive and up, and a real frame analysed.
    assert all(worker.alive() for worker in live.workers)
    health = call(f"{live.url}/health")
    assert health.status == 200 and set(health.body["workers"].values()) == {"up"}, health.body
    reply = real_frame(live.ws_url)
    assert payload_validator("frameReply").is_valid(reply), json.dumps(reply)
    assert reply["account"] == "afterwards" and "error" not in reply
