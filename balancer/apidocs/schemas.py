"""JSON Schemas both API documents use: account codes, speaker names, the
frame reply with its events and the error shape, written once.

The OpenAPI document speaks OpenAPI 3.0's schema dialect ("nullable") and
the AsyncAPI one JSON Schema draft 7 (a "null" type), so the few schemas with
a nullable field are built for a dialect.
"""
from __future__ import annotations

from typing import Any, Literal

from voicestream.accounts import MAX_ACCOUNT_LENGTH

Schema = dict[str, Any]
Dialect = Literal["openapi", "asyncapi"]

# voicestream/accounts.py ACCOUNT_PATTERN, anchored as JSON Schema wants it.
ACCOUNT_PATTERN = f"^[A-Za-z0-9_-]{{1,{MAX_ACCOUNT_LENGTH}}}$"
# worker/routes/speakers.py SPEAKER_NAME; "unknown" (any case) is reserved.
SPEAKER_NAME_PATTERN = "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
RESERVED_NAME_PATTERN = "^[Uu][Nn][Kk][Nn][Oo][Ww][Nn]$"
# voicestream/stamps.py TEXT_FORMAT: the frame's log line starts with it.
TIME_PATTERN = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$"
# balancer/packets.py parse_header: ACCOUNTCODE plus optional key=value pairs, ';'-separated.
HEADER_PATTERN = r"(^|;)\s*ACCOUNTCODE\s*=\s*[A-Za-z0-9_-]{1,64}\s*(;|$)"
# balancer/packets.py STREAM_NAME: a client's name for its stream is what an account code may be.
STREAM_PATTERN = ACCOUNT_PATTERN
# WAV sample rates a worker accepts by default (--accepted-rates).
COMMON_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

ACCOUNT: Schema = {
    "type": "string", "pattern": ACCOUNT_PATTERN, "example": "1691",
    "description": "ACCOUNTCODE: 1-64 characters of A-Z a-z 0-9 _ - (a balancer's --max-account-length "
                   "may lower the 64).",
}
SPEAKER_NAME: Schema = {
    "type": "string", "pattern": SPEAKER_NAME_PATTERN, "not": {"pattern": RESERVED_NAME_PATTERN},
    "example": "alice",
    "description": "1-64 characters of A-Z a-z 0-9 _ . - starting with a letter, digit or _; 'unknown' "
                   "(any case) is reserved for the decision that no enrolled speaker matches.",
}
FRAME_TIME: Schema = {
    "type": "string", "pattern": TIME_PATTERN, "example": "2023-01-20 13:44:44.123435",
    "description": "The frame's stamp (UTC, microseconds) as its log line starts with it.",
}
SEQ: Schema = {"type": "integer", "minimum": 0,
               "description": "The frame's own number when the client numbers its frames (stream=...;seq=...; "
                              "HTTP ingest: 'stream' and 'seq'); otherwise a WebSocket connection's count of its "
                              "packets from 1, and HTTP ingest echoes the request's 'seq' (default 1)."}


def nullable(schema: Schema, dialect: Dialect) -> Schema:
    if dialect == "openapi":
        return {**schema, "nullable": True}
    return {**schema, "type": [schema["type"], "null"]}


def events(dialect: Dialect, description: str) -> Schema:
    """A list of voicestream/events.py's events, in order (docs/protocol.md#events)."""
    frame_seq: Schema = {"type": "integer", "minimum": 0,
                         "description": "The seq of the frame it happened at, in the stream the worker saw: a "
                                        "WebSocket's seq (the client's own, on a numbered stream); for HTTP ingest "
                                        "the client's seq of a numbered stream, else the balancer's count of the "
                                        "account's frames, not the request's 'seq' (match a frame by 'time')."}
    speaker: Schema = {"type": "string", "description": "An enrolled speaker's name, or 'unknown'."}

    def event(kinds: list[str], description: str, required: list[str], properties: Schema) -> Schema:
        return {"type": "object", "description": description, "required": ["type", *required],
                "properties": {"type": {"type": "string", "enum": kinds}, **properties}}
    at_frame = {"seq": frame_seq, "time": FRAME_TIME}
    return {"type": "array", "description": description, "items": {"oneOf": [
        event(["speech_start", "speech_end"],
              "Voice turned on at this frame (the VAD's decision), or off: its first unvoiced frame.",
              ["seq", "time"], at_frame),
        event(["speaker_change"], "The immediate label ('speaker') changed at this frame; a stream's first "
                                  "label has previous null.",
              ["seq", "time", "speaker", "score", "previous"],
              {**at_frame, "speaker": speaker,
               "score": nullable({"type": "number", "description": "The window score behind the label."}, dialect),
               "previous": nullable({"type": "string", "description": "The label before."}, dialect)}),
        event(["segment"], "Final labels: a run of consecutive voiced frames of the stream with one final "
                           "speaker, sent once, at most --speaker-lag-ms after its last frame (or in the answer "
                           "to CLOSE); every voiced frame of an account with enrolled speakers is in exactly one.",
              ["speaker", "score", "start", "end", "start_seq", "end_seq", "frames", "final"],
              {"speaker": speaker,
               "score": nullable({"type": "number", "description": "Mean window score of the speaker over the "
                                                                  "segment (unknown: of the best voiceprint)."},
                                 dialect),
               "start": {**FRAME_TIME, "description": "The 'time' of its first frame."},
               "end": {**FRAME_TIME, "description": "The 'time' of its last frame."},
               "start_seq": {**frame_seq, "description": "The seq of its first frame (as an event's 'seq')."},
               "end_seq": {**frame_seq, "description": "The seq of its last frame (as an event's 'seq')."},
               "frames": {"type": "integer", "minimum": 1, "description": "Its frames: end_seq - start_seq + 1."},
               "final": {"type": "boolean", "enum": [True], "description": "Always true."}}),
        event(["tracker_restart"], "The worker had no state for this stream, which was already going (a "
                                   "failover, or state forgotten when idle): VAD and speaker tracking start "
                                   "afresh at this frame, and frames before it whose segment has not come will "
                                   "not get one.",
              ["seq", "time", "reason"],
              {**at_frame, "reason": {"type": "string", "description": "Why, for a person to read."}}),
    ]}}


def frame_reply(dialect: Dialect) -> Schema:
    """voicestream/replies.py FrameReply as a client receives it (an error
    reply is FRAME_ERROR)."""
    return {
        "type": "object",
        "required": ["account", "seq", "time", "voice", "prob", "db", "worker", "ms"],
        "properties": {
            "account": ACCOUNT,
            "seq": SEQ,
            "time": FRAME_TIME,
            "voice": {"type": "integer", "enum": [0, 1],
                      "description": "1 if speech was on at any VAD chunk of the frame."},
            "prob": {"type": "number", "minimum": 0, "maximum": 1,
                     "description": "Highest speech probability of the frame's VAD chunks."},
            "db": {"type": "number", "maximum": 0, "description": "RMS level in dBFS; digital silence is -100."},
            "worker": {"type": "integer", "description": "Port of the worker that processed the frame."},
            "ms": {"type": "number", "minimum": 0,
                   "description": "Model time for this frame (VAD + speaker encoder), milliseconds."},
            "speaker": {"type": "string",
                        "description": "Enrolled speaker, or 'unknown': only for accounts with voiceprints."},
            "score": nullable({"type": "number", "description": "The speaker decision's cosine score "
                                                               "(null until a decision is made)."}, dialect),
            "duplicate": {"type": "boolean", "enum": [True],
                          "description": "An earlier attempt of this frame was already processed: sent again "
                                         "after a reconnect, or logged by a worker that then failed. Not logged "
                                         "again; its time is that of the frame's line."},
            "events": events(dialect, "What changed at this frame, in order; absent when nothing did. Each event "
                                      "comes once. A client that ignores this field sees the replies as before."),
        },
    }


ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What was wrong, for a person to read."}},
}
FRAME_ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "description": "A frame that got no analysis. 'account' and 'seq' are there once the packet was read; "
                   "'time' when the frame may have been logged anyway (its worker failed after receiving it).",
    "properties": {
        "error": {"type": "string", "description": "What was wrong, for a person to read."},
        "account": ACCOUNT,
        "seq": SEQ,
        "time": FRAME_TIME,
    },
    "example": {"error": "no worker available: every worker is down, try again shortly", "account": "1691",
                "seq": 1},
}
