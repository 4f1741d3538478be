"""HTTP ingest: POST / with {"ACCOUNTCODE", "data": [int16], "sample_rate"}, one frame per request."""
from __future__ import annotations

import uuid

from aiohttp import web

from .errors import json_error
from .forward import NO_WORKER_PREFIX, forward
from .keys import CONFIG
from .metrics import METRICS
from .packets import PacketError, parse_ingest


async def ingest(request: web.Request) -> web.Response:
    """The frame's reply: 200, 400 for a frame a worker refused, 503 when no worker answered."""
    config = request.app[CONFIG]
    try:
        packet = parse_ingest(await request.read(), config.max_account_length, config.max_frame_seconds)
    except PacketError as exc:
        request.app[METRICS].rejected["invalid"].inc()
        return json_error(400, str(exc))
    seq = int(packet.header.fields.get("seq", 1))
    reply = await forward(request.app, packet, f"http-{uuid.uuid4().hex}", seq)
    status = 200
    if "error" in reply:
        status = 503 if reply["error"].startswith(NO_WORKER_PREFIX) else 400
    return web.json_response(reply, status=status)
