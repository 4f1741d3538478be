"""The AsyncAPI 3.0 document of the balancer's WebSocket, served at /asyncapi.json.

What balancer/packets.py reads (three packet forms and CLOSE) and what
balancer/session.py answers: one reply per packet, in order, a FrameReply
(voicestream/replies.py) with its events (voicestream/events.py) or an error
reply (balancer/errors.py error_reply); to CLOSE, a StreamClosed per account.
Operations are the balancer's: it receives packets and sends replies.
"""
from __future__ import annotations

from typing import Any

from ..packets import MAX_STREAM_NAME
from ..slow_clients import IDLE_CODE, MESSAGE_TIMEOUT_CODE
from .schemas import ACCOUNT, FRAME_ERROR, HEADER_PATTERN, Schema, events, frame_reply

Document = dict[str, Any]

ASYNCAPI_VERSION = "3.0.0"
CHANNEL = "frames"
MAX_HEADER_CHARS = 1024  # balancer/packets.py
BASE64_WAV: Schema = {"type": "string", "contentEncoding": "base64", "contentMediaType": "audio/wav"}


def message_ref(name: str) -> Schema:
    return {"$ref": f"#/channels/{CHANNEL}/messages/{name}"}


def messages() -> Document:
    header = {"type": "string", "pattern": HEADER_PATTERN, "maxLength": MAX_HEADER_CHARS}
    return {
        "accountHeader": {
            "name": "accountHeader", "title": "1a. Text part: ACCOUNTCODE",
            "summary": "Form 1, first message: the account code, then the WAV as the next (binary) message.",
            "description": "'ACCOUNTCODE=1234', optionally followed by more 'key=value' pairs separated by ';'. "
                           "A text message instead of the binary part gets an error reply. A client that may "
                           "reconnect names its stream and numbers its frames: 'stream=<name>;seq=<n>' (the name "
                           f"1-{MAX_STREAM_NAME} characters of A-Z a-z 0-9 _ -, the same for every frame of the "
                           "stream; n the frame's number in it, 1, 2, ...). After a reconnect, through any "
                           "balancer, it sends again the frames that got no reply: one a worker already "
                           "processed is answered as a duplicate and not recorded twice. A connection carries "
                           "one stream: every frame of a connection names the same one, or none does. The same "
                           "fields work in the 'text' of the other two forms.",
            "contentType": "text/plain", "payload": header,
            "examples": [{"name": "account", "payload": "ACCOUNTCODE=1691"},
                         {"name": "with a field", "payload": "ACCOUNTCODE=1691;lang=en"},
                         {"name": "a numbered frame of a named stream",
                          "payload": "ACCOUNTCODE=1691;stream=call-7f3a;seq=42"}]},
        "wavFrame": {
            "name": "wavFrame", "title": "1b. Binary part: the WAV frame",
            "summary": "Form 1, second message: one WAV frame (normally 100 ms) as a binary message.",
            "description": "Mono or up to 8 channels; 16-bit PCM (also 8/24/32-bit PCM and float); 8 or 16 kHz "
                           "natively, 11025-48000 Hz resampled. Up to --max-frame-seconds (1 s) and the "
                           "balancer's --max-message-bytes (1 MiB). A binary message without a text part before "
                           "it gets an error reply.",
            "contentType": "audio/wav", "payload": {"type": "string", "format": "binary"}},
        "jsonPacket": {
            "name": "jsonPacket", "title": "2. JSON packet",
            "summary": "Form 2: one text message holding the account and the base64 WAV.",
            "contentType": "application/json",
            "payload": {"type": "object", "required": ["text", "binary_data"],
                        "properties": {"text": header, "binary_data": {**BASE64_WAV, "minLength": 1}}},
            "examples": [{"name": "frame", "payload": {"text": "ACCOUNTCODE=1691",
                                                       "binary_data": "UklGRiQAAABXQVZFZm10IBAAAAAB..."}},
                         {"name": "a numbered frame", "payload": {"text": "ACCOUNTCODE=1691;stream=call-7f3a;seq=42",
                                                                 "binary_data": "UklGRiQAAABXQVZFZm10IBAAAAAB..."}}]},
        "literalPacket": {
            "name": "literalPacket", "title": "3. Legacy Python-literal packet",
            "summary": "Form 3: the Python literal of a dict, as str(dict) prints it, with the WAV as bytes.",
            "description": "Read with ast.literal_eval after Python's tokenizer has bounded it (at most 64 tokens "
                           "and 4 levels of nesting); never evaluated. New clients should send form 1 or 2.",
            "contentType": "text/plain", "payload": {"type": "string", "pattern": "^\\s*\\{"},
            "examples": [{"name": "frame",
                          "payload": "{'text': 'ACCOUNTCODE=1691', 'binary_data': b'RIFF$\\x00\\x00\\x00WAVE...'}"}]},
        "close": {
            "name": "close", "title": "CLOSE",
            "summary": "Ends the session: the balancer answers one streamClosed per account the connection sent "
                       "frames for, then closes the WebSocket (1000).",
            "description": "Without CLOSE (the client goes away, the balancer shuts down) the stream is closed at "
                           "the workers all the same, so the accounts' records get every final label; only the "
                           "client does not see them.",
            "contentType": "text/plain", "payload": {"type": "string", "enum": ["CLOSE"]}},
        "frameReply": {
            "name": "frameReply", "title": "Frame reply",
            "summary": "The analysis of one frame (voicestream/replies.py FrameReply).",
            "description": "The worker fills voice, prob, db, worker and ms (speaker and score for accounts with "
                           "voiceprints); the balancer adds account, seq and time. A frame sent again after a "
                           "reconnect that a worker had already processed gets its first reply again, time "
                           "included, with duplicate: true.",
            "contentType": "application/json", "payload": {"$ref": "#/components/schemas/FrameReply"},
            "examples": [{"name": "voiced", "payload": {
                "account": "1691", "seq": 17, "time": "2023-01-20 13:44:44.123435", "voice": 1, "prob": 0.93,
                "db": -21.4, "worker": 7001, "ms": 3.2}},
                {"name": "with a speaker", "payload": {
                    "account": "1691", "seq": 18, "time": "2023-01-20 13:44:44.223435", "voice": 1, "prob": 0.97,
                    "db": -20.9, "worker": 7001, "ms": 31.0, "speaker": "alice", "score": 0.71}},
                {"name": "with events", "payload": {
                    "account": "1691", "seq": 31, "time": "2023-01-20 13:44:45.623435", "voice": 1, "prob": 0.95,
                    "db": -22.0, "worker": 7001, "ms": 30.2, "speaker": "bob", "score": 0.68, "events": [
                        {"type": "speaker_change", "seq": 31, "time": "2023-01-20 13:44:45.623435",
                         "speaker": "bob", "score": 0.68, "previous": "alice"},
                        {"type": "segment", "speaker": "alice", "score": 0.74, "start": "2023-01-20 13:44:44.123435",
                         "end": "2023-01-20 13:44:44.923435", "start_seq": 17, "end_seq": 25, "frames": 9,
                         "final": True}]}}]},
        "streamClosed": {
            "name": "streamClosed", "title": "Stream closed",
            "summary": "The answer to CLOSE, one per account the connection sent frames for "
                       "(voicestream/replies.py StreamClosed), before the balancer closes the WebSocket.",
            "description": "events: what the account's pending final labels made once the stream ended (its last "
                           "segments). A client that ignores messages after CLOSE sees the session end as before.",
            "contentType": "application/json", "payload": {"$ref": "#/components/schemas/StreamClosed"},
            "examples": [{"name": "last segment", "payload": {"account": "1691", "closed": True, "events": [
                {"type": "segment", "speaker": "bob", "score": 0.7, "start": "2023-01-20 13:44:45.623435",
                 "end": "2023-01-20 13:44:47.023435", "start_seq": 31, "end_seq": 45, "frames": 15,
                 "final": True}]}}]},
        "errorReply": {
            "name": "errorReply", "title": "Error reply",
            "summary": "A packet that got no analysis: the connection stays open.",
            "description": "For a malformed packet (bad account code, text part without binary part or the "
                           "reverse, bad base64 or literal, a message over --max-message-bytes), a frame its "
                           "worker refused (unreadable WAV), or no worker up ('no worker available...'). It "
                           "still takes the packet's seq: the frame's own number on a numbered stream (none when "
                           "the packet was unreadable), else the connection's count.",
            "contentType": "application/json", "payload": {"$ref": "#/components/schemas/ErrorReply"},
            "examples": [{"name": "bad account", "payload": {
                "error": "invalid ACCOUNTCODE 'a b': use 1-64 characters of A-Z a-z 0-9 _ -", "seq": 3}}]},
    }


STREAM_CLOSED: Schema = {
    "type": "object", "required": ["account", "closed", "events"],
    "properties": {
        "account": ACCOUNT,
        "closed": {"type": "boolean", "enum": [True], "description": "Always true: tells this from a frame reply."},
        "events": events("asyncapi", "The events the stream's close made, in order: its last segments."),
        "error": {"type": "string", "description": "A worker that took frames of the stream did not answer its "
                                                   "close: the final labels pending there will not come."},
    },
}
PACKETS = ("accountHeader", "wavFrame", "jsonPacket", "literalPacket")
REPLIES = ("frameReply", "errorReply")


def asyncapi_document(version: str, host: str = "localhost:6001", protocol: str = "ws") -> Document:
    """host and protocol: where this balancer is reached (the request's own, when served)."""
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "voicestream balancer WebSocket",
            "version": version,
            "description": "Stream 100 ms WAV frames per account and get one JSON reply per packet, in order, on "
                           "the same socket; a reply's events say what changed at its frame (speech start and end, "
                           "speaker changes, final labels as segments), each once; CLOSE is answered with the "
                           "last segments. When a worker fails mid-stream, the next frame goes to another worker "
                           "whose tracker starts afresh: that frame's reply carries a tracker_restart event, and "
                           "frames before it whose segment has not come will not get one. A client that ignores "
                           "events and the messages after CLOSE sees the protocol as before. The REST API is in "
                           "/openapi.json.",
        },
        "defaultContentType": "application/json",
        "servers": {"balancer": {
            "host": host, "protocol": protocol,
            "description": "The balancer. With --token, present it as 'Authorization: Bearer <token>' or, from a "
                           "browser, as ?token=<token>.",
            "security": [{"$ref": "#/components/securitySchemes/bearer"},
                         {"$ref": "#/components/securitySchemes/token"}]}},
        "channels": {CHANNEL: {
            "address": "/ws",
            "title": "Frames",
            "description": "ws://host:6001/ws (a WebSocket upgrade of / works the same). Each packet is one of "
                           "three forms; CLOSE ends the session. The balancer pings every 30 s; on shutdown it "
                           "closes with 1001 after the reply in progress; a message over 4x --max-message-bytes "
                           "closes the connection (1009), a smaller one over the limit gets an error reply. A "
                           "message (a packet: its text part and its binary part) unfinished --message-timeout "
                           f"(20 s) after its first byte closes the connection with {MESSAGE_TIMEOUT_CODE} "
                           "'message incomplete after 20 s'; none begun for --idle-timeout (60 s) with "
                           f"{IDLE_CODE} 'idle for 60 s'. A client that numbers its frames reconnects and sends "
                           "again those without a reply.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}
                         for name in (*PACKETS, "close", *REPLIES, "streamClosed")},
            "bindings": {"ws": {"method": "GET", "query": {
                "type": "object",
                "properties": {"token": {"type": "string", "description": "The balancer's --token, if any."}}}}},
        }},
        "operations": {
            "receivePacket": {
                "action": "receive", "channel": {"$ref": f"#/channels/{CHANNEL}"},
                "title": "A packet in", "summary": "One frame of one account, in any of the three forms.",
                "messages": [message_ref(name) for name in PACKETS],
                "reply": {"channel": {"$ref": f"#/channels/{CHANNEL}"},
                          "messages": [message_ref(name) for name in REPLIES]},
            },
            "receiveClose": {
                "action": "receive", "channel": {"$ref": f"#/channels/{CHANNEL}"},
                "title": "CLOSE", "summary": "The client ends the session.", "messages": [message_ref("close")],
                "reply": {"channel": {"$ref": f"#/channels/{CHANNEL}"}, "messages": [message_ref("streamClosed")]},
            },
            "sendReply": {
                "action": "send", "channel": {"$ref": f"#/channels/{CHANNEL}"},
                "title": "A reply out", "summary": "One per packet, in the packets' order.",
                "messages": [message_ref(name) for name in REPLIES],
            },
        },
        "components": {
            "schemas": {"FrameReply": frame_reply("asyncapi"), "ErrorReply": FRAME_ERROR,
                        "StreamClosed": STREAM_CLOSED},
            "messages": messages(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "The balancer's --token."},
                "token": {"type": "httpApiKey", "in": "query", "name": "token",
                          "description": "The same token as ?token= (browsers cannot set WebSocket headers)."},
            },
        },
    }
