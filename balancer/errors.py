"""Every error the balancer answers is JSON with an "error" field."""
from __future__ import annotations

from aiohttp import web

from voicestream.replies import FrameReply


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def error_reply(message: str, account: str | None = None, seq: int | None = None) -> FrameReply:
    """A WebSocket reply for a packet that was not forwarded."""
    reply: FrameReply = {"error": message}
    if account is not None:
        reply["account"] = account
    if seq is not None:
        reply["seq"] = seq
    return reply
