"""The balancer's aiohttp application: WebSocket and HTTP ingest of frames,
and the REST API, each routed to the account's worker."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid
import weakref

import aiohttp
from aiohttp import web

from .config import BalancerConfig
from .packets import Header, Packet, PacketError, check_account, parse_ingest, parse_text_message
from .workers import WorkerPool

log = logging.getLogger("balancer")

CONFIG = web.AppKey("config", BalancerConfig)
POOL = web.AppKey("pool", WorkerPool)
SESSION = web.AppKey("session", aiohttp.ClientSession)
SOCKETS = web.AppKey("sockets", weakref.WeakSet)
HEALTH_TASK = web.AppKey("health_task", asyncio.Task)

RETRYABLE = (aiohttp.ClientConnectionError, asyncio.TimeoutError)


async def forward_frame(app: web.Application, packet: Packet, stream: str, seq: int) -> dict:
    """Send a frame to the account's worker; on a connection failure or timeout
    try the next rendezvous choice. The worker answers a retried (stream, seq)
    from memory, so a frame is processed once."""
    pool, session, config = app[POOL], app[SESSION], app[CONFIG]
    reply: dict = {"account": packet.account, "seq": seq}
    headers = {"X-Account": packet.account, "X-Stream": stream, "X-Seq": str(seq),
               "Content-Type": "audio/wav"}
    timeout = aiohttp.ClientTimeout(total=config.forward_timeout)
    for worker in pool.ranked(packet.account):
        try:
            async with session.post(f"{worker}/frames", data=packet.wav, headers=headers, timeout=timeout) as resp:
                if resp.status >= 500:
                    pool.mark(worker, False, f"/frames answered {resp.status}")
                    continue
                reply.update(await resp.json(content_type=None))
                return reply
        except RETRYABLE as exc:
            pool.mark(worker, False, f"forward failed: {exc.__class__.__name__}")
        except (aiohttp.ContentTypeError, json.JSONDecodeError, ValueError):
            reply["error"] = f"worker {worker} gave an unreadable reply"
            return reply
    reply["error"] = "no worker available: every worker is down, try again shortly"
    return reply


def error_reply(message: str, account: str | None = None, seq: int | None = None) -> dict:
    reply: dict = {"error": message}
    if account is not None:
        reply["account"] = account
    if seq is not None:
        reply["seq"] = seq
    return reply


async def websocket(request: web.Request) -> web.StreamResponse:
    app, config = request.app, request.app[CONFIG]
    if len(app[SOCKETS]) >= config.max_connections:
        return json_error(429, f"too many connections: limit {config.max_connections}")
    # Messages up to 4x the limit get an error reply on an open connection;
    # beyond that aiohttp closes it (1009) before buffering more.
    ws = web.WebSocketResponse(max_msg_size=4 * config.max_message_bytes, heartbeat=30)
    await ws.prepare(request)
    app[SOCKETS].add(ws)
    stream, seq = uuid.uuid4().hex, 0
    header: Header | None = None
    try:
        async for msg in ws:
            packet: Packet | None = None
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY) and len(msg.data) > config.max_message_bytes:
                seq += 1
                header = None
                await ws.send_json(error_reply(f"message of {len(msg.data)} bytes exceeds limit {config.max_message_bytes}", seq=seq))
                continue
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    parsed = parse_text_message(msg.data, config.max_account_length)
                except PacketError as exc:
                    seq += 1
                    await ws.send_json(error_reply(str(exc), seq=seq))
                    continue
                if parsed is None:  # CLOSE
                    break
                if isinstance(parsed, Header):
                    if header is not None:
                        seq += 1
                        await ws.send_json(error_reply("text part was not followed by a binary part", header.account, seq))
                    header = parsed
                    continue
                packet = parsed
            elif msg.type == aiohttp.WSMsgType.BINARY:
                if header is None:
                    seq += 1
                    await ws.send_json(error_reply("binary part without a text part: send 'ACCOUNTCODE=...' first", seq=seq))
                    continue
                packet, header = Packet(header, msg.data), None
            else:
                continue
            seq += 1
            await ws.send_json(await forward_frame(app, packet, stream, seq))
    finally:
        app[SOCKETS].discard(ws)
        await ws.close()
    return ws


async def root(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await websocket(request)
    if request.method == "GET":
        return web.json_response({"service": "voice stream balancer",
                                  "websocket": "/ws", "workers": request.app[POOL].status()})
    return await ingest(request)


async def ingest(request: web.Request) -> web.Response:
    """POST / with {"ACCOUNTCODE", "data": [int16], "sample_rate"}: one frame over HTTP."""
    config = request.app[CONFIG]
    try:
        packet = parse_ingest(await request.read(), config.max_account_length, config.max_frame_seconds)
    except PacketError as exc:
        return json_error(400, str(exc))
    seq = int(packet.header.fields.get("seq", 1))
    reply = await forward_frame(request.app, packet, f"http-{uuid.uuid4().hex}", seq)
    status = 200 if "error" not in reply else (503 if reply["error"].startswith("no worker") else 400)
    return web.json_response(reply, status=status)


async def proxy(request: web.Request) -> web.StreamResponse:
    """REST calls go to the account's worker (or any healthy one for stateless
    calls). Only refused connections are retried: a request that may have
    reached a worker is never sent twice."""
    app, pool = request.app, request.app[POOL]
    account = request.match_info.get("account")
    if account is not None:
        try:
            check_account(account, app[CONFIG].max_account_length)
        except PacketError as exc:
            return json_error(400, str(exc))
        candidates = pool.ranked(account)
    else:
        candidates = pool.ranked(uuid.uuid4().hex)  # spreads stateless calls
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
    for worker in candidates:
        try:
            async with app[SESSION].request(request.method, f"{worker}{request.path_qs}", data=body,
                                             headers=headers) as resp:
                return web.Response(body=await resp.read(), status=resp.status,
                                    content_type=resp.content_type or "application/json")
        except aiohttp.ClientConnectorError as exc:
            pool.mark(worker, False, f"proxy failed: {exc.__class__.__name__}")
    return json_error(503, "no worker available: every worker is down, try again shortly")


async def health(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    up = pool.healthy()
    return web.json_response({"status": "ok" if up else "degraded", "workers": pool.status(),
                              "connections": len(request.app[SOCKETS])}, status=200 if up else 503)


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def authenticate(request: web.Request, handler):
    token = request.app[CONFIG].token
    if token and request.path != "/health":
        auth = request.headers.get("Authorization", "")
        given = auth[7:] if auth.startswith("Bearer ") else request.query.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            log.warning("rejected unauthenticated %s %s from %s", request.method, request.path, request.remote)
            return json_error(401, "missing or wrong token: send 'Authorization: Bearer <token>' or ?token=<token>")
    return await handler(request)


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            message = "request body too large" if exc.status == 413 else exc.reason
            return json_error(exc.status, f"{message}: {exc.text}" if exc.status == 413 else message)
        raise


async def start_pool(app: web.Application) -> None:
    config = app[CONFIG]
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    app[SESSION] = aiohttp.ClientSession(connector=connector)
    await app[POOL].check(app[SESSION])
    app[HEALTH_TASK] = asyncio.create_task(app[POOL].poll(app[SESSION], config.health_interval))


async def close_sockets(app: web.Application) -> None:
    for ws in list(app[SOCKETS]):
        await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutting down")


async def stop_pool(app: web.Application) -> None:
    app[HEALTH_TASK].cancel()
    await app[SESSION].close()


def create_app(config: BalancerConfig | None = None) -> web.Application:
    config = config or BalancerConfig()
    app = web.Application(client_max_size=config.max_message_bytes, middlewares=[json_errors, authenticate])
    app[CONFIG] = config
    app[POOL] = WorkerPool(config.workers)
    app[SOCKETS] = weakref.WeakSet()
    app.on_startup.append(start_pool)
    app.on_shutdown.append(close_sockets)
    app.on_cleanup.append(stop_pool)
    app.router.add_route("*", "/", root)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/accounts/{account}/{tail:.*}", proxy)
    app.router.add_post("/embed", proxy)
    app.router.add_post("/compare", proxy)
    return app
