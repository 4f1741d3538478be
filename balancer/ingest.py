"""HTTP ingest: POST / with {"ACCOUNTCODE", "data": [int16], "sample_rate"[, "stream", "seq"]}, one
frame per request, sent on in its account's HTTP stream (http_streams.py)."""
from __future__ import annotations

from aiohttp import web

from .errors import json_error
from .forward import NO_WORKER_PREFIX, forward
from .keys import CLOSER, CONFIG, HTTP_STREAMS
from .metrics import METRICS
from .packets import PacketError, parse_ingest


async def ingest(request: web.Request) -> web.Response:
    """The frame's reply: 200, 400 for a frame a worker refused, 503 when no worker answered."""
    app = request.app
    config = app[CONFIG]
    try:
        packet = parse_ingest(await request.read(), config.max_account_length, config.max_frame_seconds)
    except PacketError as exc:
        app[METRICS].rejected["invalid"].inc()
        return json_error(400, str(exc))
    streams, header = app[HTTP_STREAMS], packet.header
    stream = streams.take(packet.account, app.get(CLOSER), header.stream)
    try:
        async with stream.lock:
            if header.seq is None:
                stream.seq += 1
            reached: list[str] = []
            try:
                reply = await forward(app, packet, stream.stream, header.seq or stream.seq, reached)
            finally:
                stream.reached(reached)
    finally:
        streams.release(stream)
    # A stream the client did not name: the balancer's seq names the frame
    # to its worker (and in the events); the reply's seq stays the client's own.
    reply["seq"] = header.seq or int(header.fields.get("seq", 1))
    status = 200
    if "error" in reply:
        status = 503 if reply["error"].startswith(NO_WORKER_PREFIX) else 400
    return web.json_response(reply, status=status)
