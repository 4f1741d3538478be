"""A client's WebSocket: packets in, one reply per packet out, in order.

Every reply gets the connection's next seq, which with the connection's
stream id names the frame to the worker. CLOSE is answered with one
StreamClosed per account the connection sent frames for (the final labels
its close made: closing.py), then the socket closes (1000). On shutdown each
handler closes its own socket (1001): an idle one at once, a busy one after
its reply. A connection that ends without CLOSE has its closes sent all the
same, in the background.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from voicestream.replies import FrameReply, StreamClosed

from .closing import StreamWorkers, close_account
from .errors import error_reply
from .forward import forward
from .keys import CLOSER, CONFIG, SESSION, TRAFFIC
from .metrics import METRICS
from .packets import Header, Packet, PacketError, parse_text_message
from .traffic import OpenSocket

log = logging.getLogger("balancer.session")

# What receive() returns once the connection is over.
ENDED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


@dataclass
class Connection:
    """One WebSocket's packet state."""
    stream: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0
    header: Header | None = None  # a text part waiting for its binary part
    closed: bool = False  # the client sent CLOSE
    workers: StreamWorkers = field(default_factory=StreamWorkers)  # what its close must reach

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


Message = FrameReply | StreamClosed  # what the balancer sends a client


async def handle_message(app: web.Application, conn: Connection, msg: aiohttp.WSMessage) -> list[Message]:
    """The replies to one WebSocket message: none for a text part that waits
    for its binary part, one otherwise (two when it also orphans a text part);
    to CLOSE, one StreamClosed per account."""
    config, invalid = app[CONFIG], app[METRICS].rejected["invalid"]
    if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
        return []
    replies: list[Message] = []
    binary = msg.type == aiohttp.WSMsgType.BINARY
    if conn.header is not None and not binary:
        invalid.inc()
        replies.append(error_reply("text part was not followed by a binary part", conn.header.account,
                                   conn.next_seq()))
        conn.header = None
    size = len(msg.data) if binary else len(msg.data.encode("utf-8", "surrogatepass"))
    if size > config.max_message_bytes:
        account = conn.header.account if conn.header else None
        conn.header = None
        invalid.inc()
        replies.append(error_reply(f"message of {size} bytes exceeds the limit of {config.max_message_bytes} bytes",
                                   account, conn.next_seq()))
        return replies
    if binary:
        if conn.header is None:
            invalid.inc()
            replies.append(error_reply("binary part without a text part: send 'ACCOUNTCODE=...' first",
                                       seq=conn.next_seq()))
            return replies
        packet, conn.header = Packet(conn.header, msg.data), None
    else:
        try:
            parsed = parse_text_message(msg.data, config.max_account_length)
        except PacketError as exc:
            invalid.inc()
            replies.append(error_reply(str(exc), seq=conn.next_seq()))
            return replies
        if parsed is None:
            conn.closed = True
            replies += await close_stream(app, conn)
            return replies
        if isinstance(parsed, Header):
            conn.header = parsed
            return replies
        packet = parsed
    reached: list[str] = []
    try:
        replies.append(await forward(app, packet, conn.stream, conn.next_seq(), reached))
    finally:
        conn.workers.reached(packet.account, reached)
    return replies


async def close_stream(app: web.Application, conn: Connection) -> list[StreamClosed]:
    """The client's CLOSE: each account's close at its workers, all at once;
    one StreamClosed per account, in the order of their last frames."""
    session, timeout = app[SESSION], app[CONFIG].forward_timeout
    return list(await asyncio.gather(*(close_account(session, conn.stream, account, workers, timeout)
                                       for account, workers in conn.workers.take())))


async def websocket(request: web.Request) -> web.StreamResponse:
    app, config, traffic = request.app, request.app[CONFIG], request.app[TRAFFIC]
    # Up to 4x the limit a message gets an error reply on an open connection;
    # beyond that aiohttp closes the connection (1009) rather than buffer more.
    ws = web.WebSocketResponse(max_msg_size=4 * config.max_message_bytes, heartbeat=30)
    await ws.prepare(request)
    socket = OpenSocket()
    traffic.sockets.add(socket)
    conn = Connection()
    try:
        while not (conn.closed or traffic.stopping):
            msg = await next_message(ws, socket)
            if msg is None or msg.type in ENDED:
                break
            socket.busy = True  # until its replies are sent
            try:
                replies = await handle_message(app, conn, msg)
            except Exception:  # a bug must cost one reply, not the connection
                log.exception("failed on a message of stream %s", conn.stream)
                app[METRICS].rejected["internal"].inc()
                replies = [error_reply("internal error on this packet", seq=conn.next_seq())]
            try:
                for reply in replies:
                    await ws.send_json(reply)
            except ConnectionError:  # the client left before its reply (the frame is logged)
                log.info("client of stream %s left before reply %d", conn.stream, conn.seq)
                break
            socket.busy = False
    finally:
        traffic.sockets.discard(socket)
        # Gone without CLOSE (or shutdown): the closes go out all the same,
        # so the accounts' records get every final label; nobody reads their answers.
        app[CLOSER].close(conn.stream, conn.workers.take())
        # Closed here, never from another task: close() then reads on until
        # the client's close reply, so no unread data (a frame the client sent
        # meanwhile: not accepted, no reply) turns the end of the TCP
        # connection into a reset that can swallow the close frame.
        if traffic.stopping:
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutting down")
        else:
            await ws.close()
    return ws


async def next_message(ws: web.WebSocketResponse, socket: OpenSocket) -> aiohttp.WSMessage | None:
    """The client's next message, or None if shutdown cancelled the wait for it."""
    socket.receive = receive = asyncio.ensure_future(ws.receive())
    try:
        return await receive
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if receive.cancelled() and task is not None and not task.cancelling():
            # Only the read was cancelled; a message that arrived meanwhile
            # stays in the reader's buffer, and close() discards it.
            return None
        raise
    finally:
        socket.receive = None


async def close_idle_sockets(app: web.Application) -> None:
    """on_shutdown (SIGTERM): run_app has stopped listening. Each WebSocket's
    handler closes it (1001): an idle one now, a busy one after its reply.
    run_app then waits up to shutdown_timeout for every handler to finish."""
    traffic = app[TRAFFIC]
    traffic.stopping, traffic.stopped_at = True, time.monotonic()
    busy = sum(socket.busy for socket in traffic.sockets)
    log.info("shutting down: closing %d idle connections, %d busy ones close after their reply",
             len(traffic.sockets) - busy, busy)
    for socket in traffic.sockets:
        if not socket.busy and socket.receive is not None:
            socket.receive.cancel()
