"""A client's WebSocket: packets in, one reply per packet out, in order.

Every frame is named to the worker by the connection's stream id and a seq:
the balancer's own (a uuid, and the connection's count of its packets), or
the client's, when its packets name a stream and number their frames
(packets.py): then a frame it sends again on a new connection, after a drop
or through another balancer, is the same frame to the worker, which answers
it as a duplicate instead of recording it twice. A connection carries one
stream. CLOSE is answered with one StreamClosed per account the connection
sent frames for (the final labels its close made: closing.py), then the
socket closes (1000). On shutdown each handler closes its own socket (1001):
an idle one at once, a busy one after its reply. A connection that ends
without CLOSE has its closes sent all the same, in the background. A client
that keeps a message unfinished or sends none for too long is closed
(slow_clients.py: 4008, 4000).
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
from .packets import CLIENT_STREAM_PREFIX, Header, Packet, PacketError, parse_text_message
from .slow_clients import CLOSE_WAIT_SECONDS, ClientBytes, ClientClock, Expired, MessageBoundaries
from .traffic import OpenSocket

log = logging.getLogger("balancer.session")

# What receive() returns once the connection is over.
ENDED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


@dataclass
class Connection:
    """One WebSocket's packet state."""
    stream: str = field(default_factory=lambda: uuid.uuid4().hex)  # the client's, once its frames name one
    seq: int = 0  # packets counted so far (a connection whose frames are not numbered)
    # Whether its frames name a stream: decided by its first frame.
    numbered: bool | None = None
    header: Header | None = None  # a text part waiting for its binary part
    closed: bool = False  # the client sent CLOSE
    workers: StreamWorkers = field(default_factory=StreamWorkers)  # what its close must reach

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def reply_seq(self, header: Header | None = None) -> int | None:
        """The seq of a reply to a packet that reaches no worker: the frame's
        own number when the client gave one; else the connection's count, or
        none on a connection whose frames are numbered (its count means
        nothing to the client)."""
        if header is not None and header.seq is not None:
            return header.seq
        return None if self.numbered else self.next_seq()

    def frame_seq(self, header: Header) -> int:
        """The seq that names header's frame in the connection's stream;
        PacketError for a frame that does not fit the connection's stream."""
        if header.stream_id is not None and header.seq is not None:
            if self.numbered is None:
                self.numbered, self.stream = True, header.stream_id
            if not self.numbered:
                raise PacketError("this connection's frames are not numbered, and a connection carries one "
                                  "stream: name the stream from the first frame on (stream=...;seq=...), on a new "
                                  "connection")
            if header.stream_id != self.stream:
                raise PacketError(f"this connection streams {self.client_stream!r}, and a connection carries one "
                                  f"stream: send stream {header.stream!r} on another connection")
            return header.seq
        if self.numbered:
            raise PacketError(f"this connection streams {self.client_stream!r}: every frame needs "
                              f"stream={self.client_stream};seq=<n>")
        self.numbered = False
        return self.next_seq()

    @property
    def client_stream(self) -> str:
        return self.stream.removeprefix(CLIENT_STREAM_PREFIX)


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
                                   conn.reply_seq(conn.header)))
        conn.header = None
    size = len(msg.data) if binary else len(msg.data.encode("utf-8", "surrogatepass"))
    if size > config.max_message_bytes:
        header, conn.header = conn.header, None
        invalid.inc()
        replies.append(error_reply(f"message of {size} bytes exceeds the limit of {config.max_message_bytes} bytes",
                                   header.account if header else None, conn.reply_seq(header)))
        return replies
    if binary:
        if conn.header is None:
            invalid.inc()
            replies.append(error_reply("binary part without a text part: send 'ACCOUNTCODE=...' first",
                                       seq=conn.reply_seq()))
            return replies
        packet, conn.header = Packet(conn.header, msg.data), None
    else:
        try:
            parsed = parse_text_message(msg.data, config.max_account_length)
        except PacketError as exc:
            invalid.inc()
            replies.append(error_reply(str(exc), seq=conn.reply_seq()))
            return replies
        if parsed is None:
            conn.closed = True
            replies += await close_stream(app, conn)
            return replies
        if isinstance(parsed, Header):
            conn.header = parsed
            return replies
        packet = parsed
    try:
        seq = conn.frame_seq(packet.header)
    except PacketError as exc:
        invalid.inc()
        replies.append(error_reply(str(exc), packet.account, conn.reply_seq(packet.header)))
        return replies
    reached: list[str] = []
    try:
        replies.append(await forward(app, packet, conn.stream, seq, reached))
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
    loop, boundaries = asyncio.get_running_loop(), MessageBoundaries()
    watch_bytes(request, ws, boundaries, loop)
    await ws.prepare(request)
    clock = ClientClock(loop, boundaries, config.message_timeout, config.idle_timeout)
    clock.start()
    socket = OpenSocket()
    traffic.sockets.add(socket)
    conn = Connection()
    try:
        while not (conn.closed or traffic.stopping or clock.expired):
            msg = await next_message(ws, socket, clock)
            if msg is None or msg.type in ENDED:
                break
            socket.busy = True  # until its replies are sent
            pending = conn.header
            try:
                replies = await handle_message(app, conn, msg)
            except Exception:  # a bug must cost one reply, not the connection
                log.exception("failed on a message of stream %s", conn.stream)
                app[METRICS].rejected["internal"].inc()
                conn.header = None
                replies = [error_reply("internal error on this packet", seq=conn.reply_seq())]
            if conn.header is not pending:  # a text part waits for its binary part: the packet is under way
                clock.packet_since = None if conn.header is None else loop.time()
            try:
                for reply in replies:
                    await ws.send_json(reply)
            except ConnectionError:  # the client left before its reply (the frame is logged)
                log.info("client of stream %s left before reply %d", conn.stream, conn.seq)
                break
            socket.busy = False
    finally:
        clock.stop()
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
        elif clock.expired is not None:
            await close_expired(app, ws, conn, clock.expired)
        else:
            await ws.close()
    return ws


def watch_bytes(request: web.Request, ws: web.WebSocketResponse, boundaries: MessageBoundaries,
                loop: asyncio.AbstractEventLoop) -> None:
    """Shows the boundaries every byte the client sends from now on, once
    the request is a WebSocket handshake that prepare() will answer."""
    transport = request.transport
    # None: the client is already gone; not ok: prepare() refuses the
    # handshake, and the connection may go on with HTTP.
    if transport is not None and ws.can_prepare(request).ok:
        protocol = transport.get_protocol()
        assert isinstance(protocol, asyncio.Protocol)
        transport.set_protocol(ClientBytes(protocol, boundaries, loop))


async def close_expired(app: web.Application, ws: web.WebSocketResponse, conn: Connection, expired: Expired) -> None:
    """Closes a connection that waited too long for its client (4008, 4000),
    waiting CLOSE_WAIT_SECONDS at most for the client's own close frame."""
    app[METRICS].rejected[expired.kind].inc()
    log.info("closing the connection of stream %s: %s", conn.stream, expired.reason)
    try:
        async with asyncio.timeout(CLOSE_WAIT_SECONDS):
            await ws.close(code=expired.code, message=expired.reason.encode())
    except TimeoutError:  # close() dropped the connection: it never answered
        pass


async def next_message(ws: web.WebSocketResponse, socket: OpenSocket,
                       clock: ClientClock) -> aiohttp.WSMessage | None:
    """The client's next message, or None if shutdown ended the wait for it
    or the client took too long (clock.expired says so)."""
    task = socket.waiting = asyncio.current_task()
    clock.waiting(socket.interrupt)
    try:
        return await ws.receive()
    except asyncio.CancelledError:
        # Only the wait was ended (socket.interrupt) when that is the one
        # cancel of this task; a message that arrived meanwhile stays in the
        # reader's buffer, and close() discards it.
        if socket.interrupted and task is not None and task.uncancel() == 0:
            return None
        raise
    finally:
        clock.busy()
        socket.waiting = None


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
        if not socket.busy:
            socket.interrupt()
