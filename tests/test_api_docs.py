"""The API documents and the /docs page (balancer/apidocs/, balancer/static/docs/),
in-process: both documents are well formed, they describe every route the
balancer and the worker's speaker API register and nothing else, the
WebSocket's real replies (and CLOSE's answer) match the AsyncAPI payloads, the
events and StreamClosed are voicestream's, the documentation needs
no token and loads nothing from another origin. One test renders the page in
headless Chromium (integration). tests/test_schemathesis.py checks a live
system's answers against the OpenAPI document."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema_rs  # comes with schemathesis
import pytest
import schemathesis
from aiohttp.test_utils import make_mocked_request
from flask import Flask

from balancer.apidocs import ASSETS, PUBLIC_PATHS, asyncapi_document, openapi_document, package_version
from balancer.app import create_app
from balancer.config import BalancerConfig
from balancer_fakes import balancer, closed_port_url, fake_workers
from voicestream.wav import encode_wav
from voicetools.cluster import Process, free_port, http_ok, wait_until
from worker.routes.segments import bp as segment_routes
from worker.routes.speakers import bp as speaker_routes

FRAME = encode_wav([0, 100, -100, 0] * 400, 16000)  # 0.1 s
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
COMPONENT_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")
# Routes that are neither REST API nor WebSocket: the documentation itself,
# and the console's style and script (the console is GET / for a browser).
DOC_ROUTES = {"/docs", "/docs/{asset}", "/openapi.json", "/asyncapi.json", "/console.js", "/console.css"}


def openapi() -> dict[str, Any]:
    return openapi_document(package_version())


def asyncapi() -> dict[str, Any]:
    return asyncapi_document(package_version())


def pointer(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references: {ref}"
    node: Any = doc
    for key in ref[2:].split("/"):
        key = key.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and key in node, f"{ref} does not resolve"
        node = node[key]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def inline(doc: dict[str, Any], node: Any) -> Any:
    """node with every local reference replaced by what it points to."""
    if isinstance(node, dict):
        if "$ref" in node:
            return inline(doc, pointer(doc, node["$ref"]))
        return {key: inline(doc, value) for key, value in node.items()}
    if isinstance(node, list):
        return [inline(doc, value) for value in node]
    return node


def payload_validator(message: str, doc: dict[str, Any] | None = None) -> jsonschema_rs.Draft7Validator:
    """A validator of an AsyncAPI message's payload (AsyncAPI schemas are JSON Schema draft 7)."""
    doc = doc or asyncapi()
    return jsonschema_rs.Draft7Validator(inline(doc, doc["components"]["messages"][message]["payload"]))


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in doc["paths"].items() for method, op in item.items()
            if method in HTTP_METHODS]


# --- the documents ---


def test_the_openapi_document_is_valid_openapi_3():
    doc = openapi()
    schemathesis.openapi.from_dict(doc).validate()  # the OpenAPI 3.0 meta-schema
    assert doc["openapi"].startswith("3.0.") and doc["info"]["version"] == package_version() != "0+unknown"
    for ref in refs(doc):
        pointer(doc, ref)
    for kind, named in doc["components"].items():
        assert all(COMPONENT_NAME.match(name) for name in named), kind
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))


def test_every_operation_documents_its_errors_as_json_with_an_error_field():
    doc = openapi()
    for method, path, op in operations(doc):
        for status, response in op["responses"].items():
            response = inline(doc, response)
            if int(status) >= 400 and path != "/health":  # /health's 503 is its report: no worker is up
                schema = response["content"]["application/json"]["schema"]
                assert "error" in schema["required"], (method, path, status)
        statuses = set(op["responses"])
        if path not in ("/health", "/metrics"):  # monitoring: no token, no connection limit
            assert {"401", "429"} <= statuses, (method, path)
        if path.startswith("/accounts/") or path in ("/embed", "/compare"):  # proxied to a worker
            assert {"400", "502", "503"} <= statuses, (method, path)
        if "requestBody" in op:
            assert "413" in statuses, (method, path)


def test_the_parameters_are_the_codes_own_patterns():
    from voicestream.accounts import ACCOUNT_PATTERN
    from worker.routes.speakers import SPEAKER_NAME
    params = {p["name"]: p["schema"] for item in openapi()["paths"].values() for p in item.get("parameters", [])}
    assert params["account"]["pattern"] == f"^{ACCOUNT_PATTERN.pattern}$"
    assert params["name"]["pattern"] == f"^{SPEAKER_NAME.pattern}$"
    name = jsonschema_rs.Draft4Validator(params["name"])
    assert name.is_valid("alice") and not name.is_valid("Unknown") and not name.is_valid(".hidden")
    from worker.routes import segments
    query = {p["name"]: p["schema"] for p in openapi()["paths"]["/accounts/{account}/segments"]["get"]["parameters"]}
    assert (query["limit"]["default"], query["limit"]["maximum"], query["stream"]["maxLength"]) == \
        (segments.DEFAULT_LIMIT, segments.MAX_LIMIT, segments.MAX_STREAM_LENGTH)
    since = jsonschema_rs.Draft4Validator(query["since"])
    for text in ("1674222284123435", "2023-01-20 13:44:44.123435", "2023-01-20 13:44:44", "2023-01-20 13:44:44.1"):
        assert since.is_valid(text) and segments.parse_since(text) is not None, text
    assert not since.is_valid("2023-01-20T13:44:44") and not since.is_valid("1" * 18)


def test_the_asyncapi_document_is_well_formed():
    doc = asyncapi()
    assert doc["asyncapi"] == "3.0.0" and doc["info"]["version"] == package_version()
    for ref in refs(doc):
        pointer(doc, ref)
    used: set[str] = set()
    for name, op in doc["operations"].items():
        assert op["action"] in ("send", "receive"), name
        channel = pointer(doc, op["channel"]["$ref"])
        for part in [op, op.get("reply", {})]:
            for message in part.get("messages", []):
                # An operation's messages are its channel's.
                assert message["$ref"].startswith(op["channel"]["$ref"] + "/messages/"), (name, message)
                used.add(message["$ref"].rsplit("/", 1)[1])
        assert channel["address"].startswith("/")
    assert used == set(doc["channels"]["frames"]["messages"]) == set(doc["components"]["messages"])
    for name, message in doc["components"]["messages"].items():
        validator = payload_validator(name, doc)
        for example in message.get("examples", []):
            assert validator.is_valid(example["payload"]), (name, example)


def test_numbered_frames_are_documented_as_the_balancer_reads_them():
    """The stream name's pattern is packets.py's, and the replies to numbered
    frames (on a numbered connection, an error reply may have no seq) are
    the documents' payloads."""
    from balancer.packets import STREAM_NAME
    ingest = openapi()["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    stream = inline(openapi(), ingest)["properties"]["stream"]
    assert stream["pattern"] == f"^{STREAM_NAME.pattern}$"
    doc = asyncapi()
    header, reply, error = (payload_validator(m, doc) for m in ("accountHeader", "frameReply", "errorReply"))
    numbered = "ACCOUNTCODE=1234;stream=call-7;seq=1"
    assert header.is_valid(numbered)

    async def go() -> list[Any]:
        async with fake_workers(1) as workers, balancer(workers) as client, client.ws_connect("/ws") as ws:
            for packet in [numbered, FRAME, b"RIFF", "ACCOUNTCODE=1234", FRAME]:
                await (ws.send_str(packet) if isinstance(packet, str) else ws.send_bytes(packet))
            return [await ws.receive_json(timeout=10) for _ in range(3)]
    ok, frame_alone, unnumbered = asyncio.run(go())
    assert reply.is_valid(ok) and ok["seq"] == 1
    assert error.is_valid(frame_alone) and "seq" not in frame_alone
    assert error.is_valid(unnumbered) and "seq" not in unnumbered


def test_both_documents_share_the_frame_reply_of_voicestream_replies():
    from voicestream.replies import FrameReply
    rest = openapi()["components"]["schemas"]["FrameReply"]["properties"]
    ws = asyncapi()["components"]["schemas"]["FrameReply"]["properties"]
    # Every field a client can receive; "error" makes a reply the documents' FrameError instead.
    assert set(rest) == set(ws) == set(FrameReply.__annotations__) - {"error"}
    assert rest["events"]["items"] == inline(openapi(), rest["events"]["items"])  # no reference: both inline it


def test_the_events_and_stream_closed_are_voicestream_events_and_replies():
    """Each event type of voicestream/events.py is one branch of the reply's
    events, with its fields, all required; StreamClosed is the answer to
    CLOSE, its message the reply of the CLOSE operation."""
    from typing import get_args, get_type_hints

    from voicestream import events
    from voicestream.replies import StreamClosed
    doc = asyncapi()
    for schema in (doc["components"]["schemas"]["FrameReply"]["properties"]["events"],
                   doc["components"]["schemas"]["StreamClosed"]["properties"]["events"]):
        branches = {tuple(branch["properties"]["type"]["enum"]): branch for branch in schema["items"]["oneOf"]}
        for kind in get_args(events.Event):
            hints = get_type_hints(kind)
            branch = branches[get_args(hints["type"])]
            assert set(branch["properties"]) == set(branch["required"]) == set(hints), kind.__name__
    closed = doc["components"]["schemas"]["StreamClosed"]
    assert set(closed["properties"]) == set(StreamClosed.__annotations__)
    assert set(closed["required"]) == StreamClosed.__required_keys__
    assert doc["operations"]["receiveClose"]["reply"]["messages"] == [
        {"$ref": "#/channels/frames/messages/streamClosed"}]
    # The documented shapes of each event, by example: one of each validates, a wrong one does not.
    reply = payload_validator("frameReply", doc)
    base = {"account": "1691", "seq": 5, "time": "2023-01-20 13:44:44.123435", "voice": 1, "prob": 0.9, "db": -20.0,
            "worker": 7001, "ms": 3.0}
    at = {"seq": 5, "time": "2023-01-20 13:44:44.123435"}
    good: list[dict[str, Any]] = [
        {"type": "speech_start", **at}, {"type": "speech_end", **at},
        {"type": "speaker_change", **at, "speaker": "alice", "score": None, "previous": None},
        {"type": "segment", "speaker": "unknown", "score": 0.4, "start": at["time"], "end": at["time"],
         "start_seq": 5, "end_seq": 5, "frames": 1, "final": True},
        {"type": "tracker_restart", **at, "reason": "this worker had no state for the stream"}]
    assert [reply.is_valid({**base, "events": [event]}) for event in good] == [True] * len(good)
    bad: list[dict[str, Any]] = [{"type": "speech_start"}, {**good[3], "final": False}, {"type": "other", **at},
                                 {**good[2], "time": "yesterday"}]
    assert [reply.is_valid({**base, "events": [event]}) for event in bad] == [False] * len(bad)


# --- the routes ---


def test_every_route_of_the_balancer_is_documented_and_every_documented_one_exists():
    app = create_app(BalancerConfig(workers=(closed_port_url(),)))
    doc, ws = openapi(), asyncapi()

    async def route_of(method: str, path: str) -> tuple[str, str]:
        match = await app.router.resolve(make_mocked_request(method, path, app=app))
        assert match.http_exception is None, f"{method} {path}: {match.http_exception}"
        return match.route.method, match.route.resource.canonical  # type: ignore[union-attr]

    async def documented() -> set[tuple[str, str]]:
        samples = {"{account}": "acme", "{name}": "alice"}
        found = set()
        for method, path, _ in operations(doc):
            concrete = path
            for param, value in samples.items():
                concrete = concrete.replace(param, value)
            found.add(await route_of(method.upper(), concrete))
        for channel in ws["channels"].values():
            found.add(await route_of("GET", channel["address"]))
        return found
    routes = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.method != "HEAD" and route.resource is not None}
    assert asyncio.run(documented()) == {r for r in routes if r[1] not in DOC_ROUTES}
    # "*" routes: / answers GET and POST (else 405), and a WebSocket upgrade.
    assert {m for m, p, _ in operations(doc) if p == "/"} == {"get", "post"}


def test_the_speaker_api_documented_is_the_one_the_worker_serves():
    app = Flask(__name__)
    app.register_blueprint(speaker_routes)
    app.register_blueprint(segment_routes)
    served = {(method.lower(), re.sub(r"<(\w+)>", lambda m: "{account}" if m[1] == "code" else f"{{{m[1]}}}",
                                      rule.rule))
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods or () if method not in ("HEAD", "OPTIONS")}
    proxied = {(method, path) for method, path, _ in operations(openapi())
               if path.startswith("/accounts/") or path in ("/embed", "/compare")}
    assert proxied == served


# --- served in-process ---


def test_the_documents_and_page_are_served_without_the_token():
    async def go() -> dict[str, Any]:
        async with balancer([closed_port_url()], token="sekrit") as client:
            out: dict[str, Any] = {}
            for path in sorted(PUBLIC_PATHS) + ["/docs/other.js", "/docs/%2e%2e/accounts/a/speakers",
                                                "/accounts/a/speakers"]:
                async with client.session.get(client.make_url(path).with_path(path, encoded=True)) as resp:
                    out[path] = (resp.status, resp.content_type, await resp.read(), dict(resp.headers))
            return out
    out = asyncio.run(go())
    assert {path: out[path][:2] for path in PUBLIC_PATHS} == {
        "/docs": (200, "text/html"), "/docs/docs.js": (200, "text/javascript"), "/docs/docs.css": (200, "text/css"),
        "/openapi.json": (200, "application/json"), "/asyncapi.json": (200, "application/json")}
    assert json.loads(out["/openapi.json"][2]) == openapi()
    # Anything else, even under /docs/, still needs the token.
    assert [out[p][0] for p in ("/docs/other.js", "/docs/%2e%2e/accounts/a/speakers", "/accounts/a/speakers")] == \
        [401, 401, 401]
    policy = out["/docs"][3]["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy


def test_the_asyncapi_server_is_where_the_client_reached_the_balancer():
    async def go() -> tuple[dict[str, Any], str]:
        async with balancer([closed_port_url()]) as client:
            async with client.get("/asyncapi.json") as resp:
                return await resp.json(), f"{client.host}:{client.port}"
    doc, host = asyncio.run(go())
    assert doc["servers"]["balancer"] == {**doc["servers"]["balancer"], "host": host, "protocol": "ws"}


class Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value is not None]


def test_the_page_loads_only_what_the_balancer_serves():
    page = (ASSETS / "index.html").read_text()
    parser = Assets()
    parser.feed(page)
    loaded = [u for u in parser.urls if not u.startswith(("#", "data:"))]
    assert loaded and not [u for u in loaded if re.match(r"^([a-z][a-z0-9+.-]*:|//)", u, re.IGNORECASE)]
    script = (ASSETS / "docs.js").read_text()
    assert not re.search(r"https?://|//[a-z0-9]", script.replace("://${", ""), re.IGNORECASE)  # ws URLs shown only
    from urllib.parse import urljoin

    async def go() -> list[tuple[str, int]]:
        async with balancer([closed_port_url()]) as client:
            out = []
            for url in loaded:
                path = urljoin("http://balancer/docs", url).removeprefix("http://balancer")
                async with client.get(path, headers={"Accept": "text/html"}) as resp:
                    out.append((path, resp.status))
            return out
    assert [status for _, status in asyncio.run(go())] == [200] * len(loaded)


def test_websocket_replies_are_the_asyncapi_payloads():
    """Every packet form and the balancer's own error replies, against fake workers."""
    doc = asyncapi()
    reply, error = payload_validator("frameReply", doc), payload_validator("errorReply", doc)
    header, json_packet, literal, close = (payload_validator(m, doc) for m in
                                           ("accountHeader", "jsonPacket", "literalPacket", "close"))
    packets: list[str | bytes] = [
        "ACCOUNTCODE=1234;lang=en", FRAME,
        json.dumps({"text": "ACCOUNTCODE=1234", "binary_data": base64.b64encode(FRAME).decode()}),
        str({"text": "ACCOUNTCODE=1234", "binary_data": FRAME}),
        "ACCOUNTCODE=no spaces",
        FRAME,  # a binary part without its text part
    ]
    assert header.is_valid(packets[0]) and json_packet.is_valid(json.loads(packets[2]))  # type: ignore[arg-type]
    assert literal.is_valid(packets[3]) and close.is_valid("CLOSE") and not header.is_valid(packets[4])

    stream_closed = payload_validator("streamClosed", doc)

    async def go() -> tuple[list[Any], Any, list[Any]]:
        async with fake_workers(1) as workers, balancer(workers) as client:
            async with client.ws_connect("/ws") as ws:
                for packet in packets:
                    await (ws.send_str(packet) if isinstance(packet, str) else ws.send_bytes(packet))
                replies = [await ws.receive_json(timeout=10) for _ in range(5)]
                workers[0].owed["1234", workers[0].frames[0]["stream"]] = [{
                    "type": "segment", "speaker": "alice", "score": 0.8, "start": replies[0]["time"],
                    "end": replies[2]["time"], "start_seq": 1, "end_seq": 3, "frames": 3, "final": True}]
                await ws.send_str("CLOSE")
                closed = await ws.receive_json(timeout=10)
                closing = await ws.receive(timeout=10)
            # No worker at all: the error reply that says so.
            async with balancer([closed_port_url()]) as lone, lone.ws_connect("/ws") as ws:
                await ws.send_str(packets[2])  # type: ignore[arg-type]
                replies.append(await ws.receive_json(timeout=10))
            return replies, closed, [closing.type.name]
    replies, closed, closing = asyncio.run(go())
    assert [reply.is_valid(r) for r in replies] == [True, True, True, False, False, False]
    assert [error.is_valid(r) for r in replies[3:]] == [True, True, True]
    assert replies[5]["error"].startswith("no worker available")
    assert stream_closed.is_valid(closed) and closed["events"][0]["type"] == "segment"
    assert not reply.is_valid(closed) and not stream_closed.is_valid(replies[0])
    assert closing == ["CLOSE"]


# --- in a browser ---

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def docs_balancer(tmp_path: Path) -> Iterator[str]:
    """A real balancer (with a token, no workers up) serving the docs."""
    port = free_port()
    process = Process("balancer", [sys.executable, "-m", "balancer", "--host", "127.0.0.1", "--port", str(port),
                                   "--workers", closed_port_url(), "--token", "sekrit"],
                      tmp_path / "balancer.out", dict(os.environ))
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.alive() and http_ok(url + "/openapi.json"), 30, "the balancer to serve /docs")
        yield url
    finally:
        process.terminate()


@pytest.mark.integration
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="needs Debian's chromium and chromium-driver "
                           "(as root, scripts/system_packages.sh installs them)")
def test_the_page_renders_the_operations_in_headless_chromium(docs_balancer: str):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(docs_balancer + "/docs#enrollSpeaker")
        wait_until(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-rendered") == "true",
                   30, "the page to render both documents")
        enroll = driver.find_element(By.ID, "enrollSpeaker")
        assert enroll.get_attribute("open") is not None  # the link opened it
        assert "/accounts/{account}/speakers/{name}" in enroll.text and "Enroll a speaker from a WAV" in enroll.text
        assert "multipart/form-data" in enroll.text and "422" in enroll.text
        websocket = driver.find_element(By.ID, "websocket").text
        assert f"ws://{docs_balancer.removeprefix('http://')}/ws" in websocket and "2. JSON packet" in websocket
        # No request was refused (CSP, another origin, a missing asset): the console is clean.
        assert [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"] == []
    finally:
        driver.quit()
