"""The balancer's aiohttp application: WebSocket and HTTP ingest of frames,
and the REST API, each routed to the account's worker."""
from __future__ import annotations

import asyncio
import hmac
import logging
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from yarl import URL

from .config import BalancerConfig
from voicestream.stamps import FrameClock

from .forward import NO_WORKER, NO_WORKER_PREFIX, forward_frame
from .links import WorkerLink
from .packets import Header, Packet, PacketError, check_account, parse_ingest, parse_text_message
from .workers import WorkerPool

log = logging.getLogger("balancer")

PAGE = Path(__file__).parent / "static" / "index.html"


@dataclass(eq=False)
class Traffic:
    """What the balancer is serving right now."""
    clients: int = 0  # open WebSockets + HTTP requests in progress: the connection limit
    frames_in_flight: int = 0
    stopping: bool = False
    # Open WebSockets -> whether a frame of theirs is being handled: on
    # shutdown, idle ones close at once, busy ones after their reply.
    sockets: dict[web.WebSocketResponse, bool] = field(default_factory=dict)
    # Close handshakes that shutdown began on idle WebSockets.
    closing: dict[web.WebSocketResponse, asyncio.Future] = field(default_factory=dict)


CONFIG = web.AppKey("config", BalancerConfig)
POOL = web.AppKey("pool", WorkerPool)
CLOCK = web.AppKey("clock", FrameClock)
TRAFFIC = web.AppKey("traffic", Traffic)
SESSION = web.AppKey("session", aiohttp.ClientSession)
LINKS = web.AppKey("links", dict)
HEALTH_TASK = web.AppKey("health_task", asyncio.Task)


async def forward(app: web.Application, packet: Packet, stream: str, seq: int) -> dict:
    traffic = app[TRAFFIC]
    traffic.frames_in_flight += 1
    try:
        return await forward_frame(app[POOL], app[LINKS], packet, stream, seq, app[CLOCK].next(),
                                   app[CONFIG].forward_timeout)
    finally:
        traffic.frames_in_flight -= 1


def error_reply(message: str, account: str | None = None, seq: int | None = None) -> dict:
    reply: dict = {"error": message}
    if account is not None:
        reply["account"] = account
    if seq is not None:
        reply["seq"] = seq
    return reply


@dataclass
class Connection:
    """One WebSocket's packet state: every reply gets the next seq, which with
    the stream id identifies the frame to the worker."""
    stream: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0
    header: Header | None = None  # a text part waiting for its binary part
    closed: bool = False  # the client sent CLOSE

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


async def handle_message(app: web.Application, conn: Connection, msg: aiohttp.WSMessage) -> list[dict]:
    """The replies to one WebSocket message: none for a text part that waits
    for its binary part, one otherwise (two when it also orphans a text part)."""
    config = app[CONFIG]
    if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
        return []
    replies: list[dict] = []
    binary = msg.type == aiohttp.WSMsgType.BINARY
    if conn.header is not None and not binary:
        replies.append(error_reply("text part was not followed by a binary part", conn.header.account,
                                   conn.next_seq()))
        conn.header = None
    size = len(msg.data) if binary else len(msg.data.encode("utf-8", "surrogatepass"))
    if size > config.max_message_bytes:
        account = conn.header.account if conn.header else None
        conn.header = None
        replies.append(error_reply(f"message of {size} bytes exceeds the limit of {config.max_message_bytes} bytes",
                                   account, conn.next_seq()))
        return replies
    if binary:
        if conn.header is None:
            replies.append(error_reply("binary part without a text part: send 'ACCOUNTCODE=...' first",
                                       seq=conn.next_seq()))
            return replies
        packet, conn.header = Packet(conn.header, msg.data), None
    else:
        try:
            parsed = parse_text_message(msg.data, config.max_account_length)
        except PacketError as exc:
            replies.append(error_reply(str(exc), seq=conn.next_seq()))
            return replies
        if parsed is None:
            conn.closed = True
            return replies
        if isinstance(parsed, Header):
            conn.header = parsed
            return replies
        packet = parsed
    replies.append(await forward(app, packet, conn.stream, conn.next_seq()))
    return replies


async def websocket(request: web.Request) -> web.StreamResponse:
    app, config, traffic = request.app, request.app[CONFIG], request.app[TRAFFIC]
    # Up to 4x the limit a message gets an error reply on an open connection;
    # beyond that aiohttp closes the connection (1009) rather than buffer more.
    ws = web.WebSocketResponse(max_msg_size=4 * config.max_message_bytes, heartbeat=30)
    await ws.prepare(request)
    traffic.sockets[ws] = False
    conn = Connection()
    try:
        async for msg in ws:
            if ws.closed:  # shutdown closed it as this message arrived: not accepted, no reply
                break
            traffic.sockets[ws] = True  # busy until its replies are sent
            try:
                replies = await handle_message(app, conn, msg)
            except Exception:  # a bug must cost one reply, not the connection
                log.exception("failed on a message of stream %s", conn.stream)
                replies = [error_reply("internal error on this packet", seq=conn.next_seq())]
            try:
                for reply in replies:
                    await ws.send_json(reply)
            except ConnectionError:  # the client left before its reply (the frame is logged)
                log.info("client of stream %s left before reply %d", conn.stream, conn.seq)
                break
            traffic.sockets[ws] = False
            if conn.closed or traffic.stopping:
                break
    finally:
        traffic.sockets.pop(ws, None)
        if ws in traffic.closing:
            # Shutdown closed this idle socket; returning before the client's
            # close reply would let the server drop the TCP connection with
            # unread data, a reset that can swallow the close frame.
            await asyncio.shield(traffic.closing[ws])
        elif traffic.stopping:
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutting down")
        else:
            await ws.close()
    return ws


async def root(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await websocket(request)
    if request.method == "GET":
        if "text/html" in request.headers.get("Accept", ""):
            return web.FileResponse(PAGE)  # the browser client
        return web.json_response({"service": "voice stream balancer",
                                  "websocket": "/ws", "workers": request.app[POOL].status()})
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    return await ingest(request)


async def ingest(request: web.Request) -> web.Response:
    """POST / with {"ACCOUNTCODE", "data": [int16], "sample_rate"}: one frame over HTTP."""
    config = request.app[CONFIG]
    try:
        packet = parse_ingest(await request.read(), config.max_account_length, config.max_frame_seconds)
    except PacketError as exc:
        return json_error(400, str(exc))
    seq = int(packet.header.fields.get("seq", 1))
    reply = await forward(request.app, packet, f"http-{uuid.uuid4().hex}", seq)
    status = 200
    if "error" in reply:
        status = 503 if reply["error"].startswith(NO_WORKER_PREFIX) else 400
    return web.json_response(reply, status=status)


# A REST path below /accounts/{account}/: plain segments, never '.' or '..'
# (which the HTTP client would resolve into another worker path).
PATH_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]+")


def valid_tail(tail: str) -> bool:
    return not tail or all(PATH_SEGMENT.fullmatch(part) and part not in (".", "..") for part in tail.split("/"))


async def proxy(request: web.Request) -> web.StreamResponse:
    """REST calls go to the account's worker (or any healthy one for stateless
    calls). Only refused connections are retried: a request that may have
    reached a worker is never sent twice."""
    app, pool, config = request.app, request.app[POOL], request.app[CONFIG]
    account = request.match_info.get("account")
    if account is not None:
        try:
            check_account(account, config.max_account_length)
        except PacketError as exc:
            return json_error(400, str(exc))
        tail = request.match_info.get("tail", "")
        if not valid_tail(tail):
            return json_error(400, "invalid path: segments of A-Z a-z 0-9 _ . ~ -, none of them '.' or '..'")
        candidates = pool.ranked(account)
    else:
        candidates = pool.ranked(uuid.uuid4().hex)  # spreads stateless calls
    body = await read_body(request, config.max_upload_bytes)
    headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
    query = request.query.copy()
    query.popall("token", None)  # the client's credential stays here
    for worker in candidates:
        url = URL(worker).with_path(request.rel_url.raw_path, encoded=True).with_query(query)
        try:
            async with app[SESSION].request(request.method, url, data=body, headers=headers) as resp:
                return web.Response(body=await resp.read(), status=resp.status,
                                    content_type=resp.content_type or "application/json")
        except aiohttp.ClientConnectorError as exc:
            pool.mark(worker, False, f"proxy failed: {exc.__class__.__name__}")
    return json_error(503, NO_WORKER)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, refused with 413 past limit (REST uploads may be larger than frames)."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return bytes(body)


async def health(request: web.Request) -> web.Response:
    pool, traffic = request.app[POOL], request.app[TRAFFIC]
    up = pool.healthy()
    return web.json_response({"status": "ok" if up else "degraded", "workers": pool.status(),
                              "connections": len(traffic.sockets), "clients": traffic.clients,
                              "frames_in_flight": traffic.frames_in_flight}, status=200 if up else 503)


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            message = f"request body too large: {exc.text}" if exc.status == 413 else exc.reason
            return json_error(exc.status, message)
        raise


def presented_token(request: web.Request) -> str:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    return request.query.get("token", "")  # browsers cannot set headers on a WebSocket


@web.middleware
async def authenticate(request: web.Request, handler):
    """With a token configured, everything but /health needs it."""
    token = request.app[CONFIG].token
    if token and request.path != "/health":
        if not hmac.compare_digest(presented_token(request).encode(), token.encode()):
            log.warning("rejected unauthenticated %s %s from %s", request.method, request.path, request.remote)
            return json_error(401, "missing or wrong token: send 'Authorization: Bearer <token>' or ?token=<token>")
    return await handler(request)


@web.middleware
async def limit_clients(request: web.Request, handler):
    """At most max_connections WebSockets and HTTP requests at once; /health
    always answers, so monitoring works under load."""
    traffic, limit = request.app[TRAFFIC], request.app[CONFIG].max_connections
    if request.path == "/health":
        return await handler(request)
    if traffic.clients >= limit:
        log.warning("refused %s %s from %s: %d clients is the limit", request.method, request.path,
                    request.remote, limit)
        return json_error(429, f"too many connections: the limit is {limit}, try again shortly")
    traffic.clients += 1
    try:
        return await handler(request)
    finally:
        traffic.clients -= 1


async def start_pool(app: web.Application) -> None:
    config = app[CONFIG]
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    app[SESSION] = aiohttp.ClientSession(connector=connector)
    app[LINKS] = {worker: WorkerLink(worker, app[SESSION], config.forward_timeout, config.max_inflight_per_worker)
                  for worker in config.workers}
    await app[POOL].check(app[SESSION], config.health_timeout)
    app[HEALTH_TASK] = asyncio.create_task(app[POOL].poll(app[SESSION], config.health_interval,
                                                          config.health_timeout))


async def stop_clients(app: web.Application) -> None:
    """SIGTERM: run_app has stopped listening. Idle WebSockets close now; one
    whose frame is in flight closes after its reply (see websocket()). run_app
    then waits up to shutdown_timeout for every handler to finish."""
    traffic = app[TRAFFIC]
    traffic.stopping = True
    idle = [ws for ws, busy in traffic.sockets.items() if not busy]
    log.info("shutting down: closing %d idle connections, %d busy ones close after their reply",
             len(idle), len(traffic.sockets) - len(idle))
    for ws in idle:
        traffic.closing[ws] = asyncio.ensure_future(
            ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutting down"))
    await asyncio.gather(*traffic.closing.values(), return_exceptions=True)


async def stop_pool(app: web.Application) -> None:
    app[HEALTH_TASK].cancel()
    await app[SESSION].close()


def create_app(config: BalancerConfig | None = None) -> web.Application:
    config = config or BalancerConfig()
    app = web.Application(client_max_size=config.max_message_bytes,
                          middlewares=[json_errors, authenticate, limit_clients])
    app[CONFIG] = config
    app[POOL] = WorkerPool(config.workers)
    app[CLOCK] = FrameClock()
    app[TRAFFIC] = Traffic()
    app.on_startup.append(start_pool)
    app.on_shutdown.append(stop_clients)
    app.on_cleanup.append(stop_pool)
    app.router.add_route("*", "/", root)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/accounts/{account}/{tail:.*}", proxy)
    app.router.add_post("/embed", proxy)
    app.router.add_post("/compare", proxy)
    return app
