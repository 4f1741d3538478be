"""GET /accounts/<code>/segments: an account's final segments (the speaker
labels with --speaker-lag-ms of look-ahead) as its record keeps them - this
host's segments file, or with --database PostgreSQL's, every host's - for
clients of HTTP ingest, which get no segment events, and anyone else.

    ?since=  a frame stamp: microseconds since the epoch (UTC), or its text as
             a log line starts ("2023-01-20 13:44:44.123435", the fraction
             optional); only segments that end after it
    ?limit=  at most this many (1-1000, default 100), the earliest ends first
    ?stream= only this stream's (the client connection's id)

The answer: {"account", "segments": [events.Segment + "stream", ...], "more"}.
"more" says the limit cut the list: ask again with since = the last one's end.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from voicestream.accounts import invalid_account_message, is_valid_account
from voicestream.stamps import check_stamp, text_stamp

from ..storage.protocol import StorageUnavailable
from . import current_worker
from .replies import error, json_response

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_STREAM_LENGTH = 256
PARAMETERS = ("since", "limit", "stream")

bp = Blueprint("segments", __name__)


class QueryError(ValueError):
    """A parameter that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class SegmentQuery:
    since: int | None = None
    limit: int = DEFAULT_LIMIT
    stream: str | None = None


def parse_query(args: Mapping[str, str]) -> SegmentQuery:
    """The query's parameters, checked; QueryError names the first bad one."""
    unknown = sorted(set(args) - set(PARAMETERS))
    if unknown:
        raise QueryError(f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                         f"this call takes {', '.join(PARAMETERS)}")
    return SegmentQuery(parse_since(args.get("since")), parse_limit(args.get("limit")),
                        parse_stream(args.get("stream")))


def parse_since(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return check_stamp(text) if text.isascii() and text.isdigit() else text_stamp(text)
    except ValueError:
        raise QueryError(f"since {text[:40]!r} is not a frame stamp: give microseconds since the epoch (UTC, at "
                         "most 17 digits) or the stamp as a log line starts, e.g. 2023-01-20 13:44:44.123435") from None


def parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIMIT):
        raise QueryError(f"limit {text[:40]!r} is not a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def parse_stream(text: str | None) -> str | None:
    if text is None:
        return None
    if not 1 <= len(text) <= MAX_STREAM_LENGTH or not text.isprintable():
        raise QueryError(f"stream must be 1-{MAX_STREAM_LENGTH} printable characters (a connection's id)")
    return text


@bp.get("/accounts/<code>/segments")
def list_segments(code: str) -> ResponseReturnValue:
    if not is_valid_account(code):
        return error(400, invalid_account_message(code))
    try:
        query = parse_query(request.args)
    except QueryError as exc:
        return error(400, str(exc))
    try:
        # One more than asked: whether the limit cut the list.
        found = current_worker().storage.segments.read(code, since=query.since, stream=query.stream,
                                                        limit=query.limit + 1)
    except StorageUnavailable as exc:
        return error(503, f"the account's segments cannot be read now, try again shortly: {exc}")
    segments = [{**line.event(), "stream": line.stream} for line in found[:query.limit]]
    return json_response({"account": code, "segments": segments, "more": len(found) > query.limit}, 200)
