"""The OpenAPI 3.0 document of the balancer's REST API, served at /openapi.json.

Statuses are the ones the code answers: the balancer's own (balancer/root.py,
ingest.py, proxy.py, middleware.py) and, for the speaker API and the segments
it proxies, the worker's (worker/routes/speakers.py, worker/speakers/service.py
and worker/routes/segments.py). Every
error body is {"error": "..."}. tests/test_api_docs.py keeps the paths and the
balancer's routes in step; tests/test_schemathesis.py checks the answers of a
live system against this document.
"""
from __future__ import annotations

from typing import Any

from .rest_schemas import (
    REST_SCHEMAS,
    SEGMENTS_DEFAULT_LIMIT,
    SEGMENTS_MAX_LIMIT,
    SEGMENTS_MAX_STREAM_LENGTH,
    SINCE_PATTERN,
)
from .schemas import ACCOUNT, COMMON_RATES, ERROR, FRAME_ERROR, SEQ, SPEAKER_NAME, STREAM_PATTERN, Schema, frame_reply

Document = dict[str, Any]

OPENAPI_VERSION = "3.0.3"
WAV: Schema = {"type": "string", "format": "binary"}
MAX_FRAME_SAMPLES = max(COMMON_RATES)  # 1 s (the default --max-frame-seconds) at the highest rate


def ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def json_content(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def reply(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": json_content(schema)}


def error(description: str) -> Schema:
    return reply(description, ref("schemas", "Error"))


def wav_body(purpose: str) -> Schema:
    """A WAV as a raw body (any content type but multipart) or as a multipart form's 'file' part."""
    return {
        "required": True,
        "description": f"{purpose}: a WAV file (PCM 8/16/24/32-bit or float, 1-8 channels, down-mixed to mono) "
                       "as the raw body, or as the 'file' part of a multipart form. Up to the worker's "
                       "--max-upload-seconds (120 s) and the balancer's --max-upload-bytes (16 MiB).",
        "content": {
            "audio/wav": {"schema": WAV},
            "application/octet-stream": {"schema": WAV},
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {"file": WAV}},
                "encoding": {"file": {"contentType": "audio/wav, application/octet-stream"}},
            },
        },
    }


# Answers any call through the balancer can get.
BALANCER_ERRORS: Schema = {"401": ref("responses", "Unauthorized"), "429": ref("responses", "TooManyClients")}
# ... and any call the balancer proxies to a worker.
PROXY_ERRORS: Schema = {**BALANCER_ERRORS, "502": ref("responses", "WorkerFailed"),
                        "503": ref("responses", "Unavailable")}
UPLOAD_TOO_LARGE = error("Body over the balancer's --max-upload-bytes or the worker's limit, or audio longer "
                         "than the worker's --max-upload-seconds.")
NO_SUCH_PATH = "No such path (an empty account code or speaker name, or one holding '/')."
NOT_ENOUGH_SPEECH = error("The WAV holds too little speech (the worker's VAD counts only speech).")
BAD_WAV = "An invalid account code or path, an unreadable WAV, or a multipart body without a 'file' part."

ACCOUNT_PARAMETER = {"name": "account", "in": "path", "required": True, "schema": ACCOUNT,
                     "description": "The account (ACCOUNTCODE) the voiceprints belong to."}
NAME_PARAMETER = {"name": "name", "in": "path", "required": True, "schema": SPEAKER_NAME,
                  "description": "The speaker's name within the account."}


def operation(operation_id: str, tag: str, summary: str, description: str, responses: Schema,
              **extra: Any) -> Schema:
    return {"operationId": operation_id, "tags": [tag], "summary": summary, "description": description,
            "responses": responses, **extra}


def speaker_paths() -> Document:
    return {
        "/accounts/{account}/speakers/{name}": {
            "parameters": [ACCOUNT_PARAMETER, NAME_PARAMETER],
            "post": operation(
                "enrollSpeaker", "speakers", "Enroll a speaker from a WAV",
                "Adds the WAV's speech to the speaker's voiceprint (created on the first sample): its "
                "embedding with the mean of the windows a stream of it would be scored on. Only speech "
                "counts: at least the worker's --min-enroll-seconds (3 s) of it.",
                {"201": reply("Enrolled: the voiceprint after this sample.", ref("schemas", "Enrollment")),
                 "400": error(BAD_WAV), "404": error(NO_SUCH_PATH),
                 "409": error("The voiceprint was made by another encoder: delete it and enroll again."),
                 "413": UPLOAD_TOO_LARGE, "422": NOT_ENOUGH_SPEECH, **PROXY_ERRORS},
                requestBody=wav_body("The speaker's voice")),
            "get": operation(
                "getSpeaker", "speakers", "One voiceprint",
                "The voiceprint's metadata; with ?vector=1 its vector too (for POST /compare).",
                {"200": reply("The voiceprint.", ref("schemas", "AccountVoiceprint")),
                 "400": error("An invalid account code, speaker name or path."),
                 "404": error("The speaker is not enrolled in the account (or no such path)."), **PROXY_ERRORS},
                parameters=[{"name": "vector", "in": "query", "required": False, "schema": {"type": "boolean"},
                             "description": "1, true or yes adds the voiceprint's vector; anything else leaves "
                                            "it out."}]),
            "delete": operation(
                "deleteSpeaker", "speakers", "Delete one voiceprint", "Deletes the speaker's voiceprint.",
                {"200": reply("Deleted.", ref("schemas", "Deleted")),
                 "400": error("An invalid account code, speaker name or path."),
                 "404": error("The speaker is not enrolled in the account (or no such path)."), **PROXY_ERRORS}),
        },
        "/accounts/{account}/speakers": {
            "parameters": [ACCOUNT_PARAMETER],
            "get": operation(
                "listSpeakers", "speakers", "The account's voiceprints", "Every voiceprint's metadata.",
                {"200": reply("The account's voiceprints (an empty list when none).", ref("schemas", "Speakers")),
                 "400": error("An invalid account code or path."), "404": error(NO_SUCH_PATH), **PROXY_ERRORS}),
            "delete": operation(
                "deleteSpeakers", "speakers", "Delete all of the account's voiceprints",
                "Deletes every voiceprint of the account; the count may be 0.",
                {"200": reply("Deleted.", ref("schemas", "DeletedCount")),
                 "400": error("An invalid account code or path."), "404": error(NO_SUCH_PATH), **PROXY_ERRORS}),
        },
        "/accounts/{account}/verify": {
            "parameters": [ACCOUNT_PARAMETER],
            "post": operation(
                "verifySpeaker", "speakers", "Who speaks in a WAV",
                "Scores the WAV's speech (at least 1.5 s) against every voiceprint of the account made by this "
                "worker's encoder; the decision is the best name at or above the threshold (the account's own, "
                "see /accounts/{account}/settings, else the worker's) and 'margin' above the second best, else "
                "'unknown'.",
                {"200": reply("The decision and every score.", ref("schemas", "Verification")),
                 "400": error(BAD_WAV),
                 "404": error("The account has no enrolled speakers (or no such path)."),
                 "409": error("The account has voiceprints only from other encoders."),
                 "413": UPLOAD_TOO_LARGE, "422": NOT_ENOUGH_SPEECH, **PROXY_ERRORS},
                requestBody=wav_body("The voice to verify")),
        },
        "/accounts/{account}/settings": {
            "parameters": [ACCOUNT_PARAMETER],
            "get": operation(
                "getSettings", "speakers", "The account's decision threshold",
                "The threshold the account's streaming decisions and /verify use with this worker's encoder: its "
                "own when it set one for this encoder kind, else the worker's (--speaker-threshold).",
                {"200": reply("The threshold in use.", ref("schemas", "Settings")),
                 "400": error("An invalid account code or path."), "404": error(NO_SUCH_PATH), **PROXY_ERRORS}),
            "put": operation(
                "putSettings", "speakers", "Set the account's own decision threshold",
                "A speaker is named when the best cosine score reaches this threshold, else 'unknown': higher "
                "rejects strangers more often and enrolled speakers too. Kept per encoder kind (GE2E and "
                "ECAPA scores live on different scales); every worker's streaming decisions follow at once.",
                {"200": reply("The threshold now in use.", ref("schemas", "Settings")),
                 "400": error("Not JSON, an unknown setting, or 'threshold' missing, not a number or outside "
                              "-1 to 1; nothing is stored."),
                 "404": error(NO_SUCH_PATH), "413": UPLOAD_TOO_LARGE, **PROXY_ERRORS},
                requestBody={"required": True, "content": json_content(ref("schemas", "SettingsRequest"))}),
            "delete": operation(
                "deleteSettings", "speakers", "Back to the worker's threshold",
                "Forgets the account's own threshold for this encoder kind (if it had one).",
                {"200": reply("The worker's threshold, now in use.", ref("schemas", "SettingsDeleted")),
                 "400": error("An invalid account code or path."), "404": error(NO_SUCH_PATH), **PROXY_ERRORS}),
        },
    }


def segment_paths() -> Document:
    return {
        "/accounts/{account}/segments": {
            "parameters": [{**ACCOUNT_PARAMETER, "description": "The account (ACCOUNTCODE) the frames belong to."}],
            "get": operation(
                "listSegments", "segments", "The account's final speaker segments",
                "Runs of one stream's consecutive voiced frames with one final speaker (the label with the "
                "workers' --speaker-lag-ms of look-ahead), as the account's record keeps them: the segments file "
                "on the account's worker's host, or with --database PostgreSQL's, every host's. The same "
                "segments a WebSocket client gets as segment events, for clients of HTTP ingest and anyone "
                "else; scores as the record shows them, 2 places. Ordered by end (then stream and first "
                "frame); when 'more' is true, ask again with 'since' set to the last one's 'end'.",
                {"200": reply("The segments (an empty list when none).", ref("schemas", "Segments")),
                 "400": error("An invalid account code or path, or a bad or unknown parameter (named)."),
                 "404": error(NO_SUCH_PATH), **PROXY_ERRORS},
                parameters=[
                    {"name": "since", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": SINCE_PATTERN, "example": "2023-01-20 13:44:44.123435"},
                     "description": "Only segments that end after this frame stamp: microseconds since the epoch "
                                    "(UTC), or the stamp as a log line starts with it (the fraction optional)."},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": SEGMENTS_MAX_LIMIT,
                                "default": SEGMENTS_DEFAULT_LIMIT},
                     "description": "At most this many segments, the earliest ends first."},
                    {"name": "stream", "in": "query", "required": False,
                     "schema": {"type": "string", "minLength": 1, "maxLength": SEGMENTS_MAX_STREAM_LENGTH},
                     "description": "Only this stream's: the client connection's id (printable characters)."},
                ]),
        },
    }


def stateless_paths() -> Document:
    return {
        "/embed": {"post": operation(
            "embed", "voiceprints", "A WAV's embedding",
            "The embedding of the WAV's speech (at least 1.5 s) with the worker's encoder, and levels in dBFS. "
            "Goes to any healthy worker.",
            {"200": reply("The embedding.", ref("schemas", "Embedding")),
             "400": error("An unreadable WAV, or a multipart body without a 'file' part."),
             "413": UPLOAD_TOO_LARGE, "422": NOT_ENOUGH_SPEECH, **PROXY_ERRORS},
            requestBody=wav_body("The voice to embed"))},
        "/compare": {"post": operation(
            "compare", "voiceprints", "Score two voiceprints",
            "The cosine score of two voiceprints or embeddings (as GET .../speakers/{name}?vector=1 or POST "
            "/embed return them) made by the same encoder. Needs no encoder on the worker.",
            {"200": reply("The score.", ref("schemas", "Comparison")),
             "400": error("Not JSON, or 'a' or 'b' missing or malformed (no vector, non-finite or all-zero "
                          "values, no encoder or model, a 'dim' that is not the vector's length, vectors of "
                          "different lengths)."),
             "409": error("'a' and 'b' were made by different encoders: their score would mean nothing."),
             "413": UPLOAD_TOO_LARGE, **PROXY_ERRORS},
            requestBody={"required": True, "content": json_content(ref("schemas", "ComparisonRequest"))})},
    }


def balancer_paths() -> Document:
    return {
        "/": {
            "get": operation(
                "serviceInfo", "frames", "Service description (or the browser console)",
                "JSON naming the WebSocket path and each worker's state; a browser (Accept: text/html) gets the "
                "console page instead. With 'Upgrade: websocket' this path is the WebSocket of /asyncapi.json.",
                {"200": {"description": "The service, or the console page.",
                         "content": {**json_content(ref("schemas", "ServiceInfo")),
                                     "text/html": {"schema": {"type": "string"}}}},
                 **BALANCER_ERRORS}),
            "post": operation(
                "ingestFrame", "frames", "Analyse one frame (HTTP ingest)",
                "For clients without WebSockets: one frame of int16 samples per request, answered like a "
                "WebSocket packet. The frame goes to its account's worker and gets one log line.",
                {"200": reply("The frame's analysis.", ref("schemas", "FrameReply")),
                 "400": reply("A malformed request, or a frame its worker refused.", ref("schemas", "FrameError")),
                 "413": error("Body over the balancer's --max-message-bytes (1 MiB)."),
                 "503": reply("No worker is up (the error starts with 'no worker available').",
                              ref("schemas", "FrameError")),
                 **BALANCER_ERRORS},
                requestBody={"required": True, "content": json_content(ref("schemas", "IngestFrame"))}),
        },
        "/metrics": {"get": operation(
            "metrics", "monitoring", "Prometheus metrics",
            "The balancer's metrics in Prometheus text format (docs/metrics.md). Needs no token and is never "
            "refused for too many clients.",
            {"200": {"description": "The metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            security=[])},
        "/health": {"get": operation(
            "health", "monitoring", "Balancer and worker health",
            "200 while any worker is in the ring, 503 when none is. Needs no token and is never refused for "
            "too many clients, so monitoring works under load.",
            {"200": reply("At least one worker is up.", ref("schemas", "Health")),
             "503": reply("No worker is up.", ref("schemas", "Health"))},
            security=[])},
    }


def components() -> Document:
    return {
        "schemas": {**REST_SCHEMAS, "Error": ERROR, "FrameError": FRAME_ERROR, "FrameReply": frame_reply("openapi"),
                    "IngestFrame": ingest_frame()},
        "responses": {
            "Unauthorized": error("The balancer runs with --token and the request did not present it."),
            "TooManyClients": error("The balancer's --max-connections (WebSockets plus requests in progress) "
                                    "are in use; try again shortly."),
            "WorkerFailed": error("The worker failed in the middle of the request: it may have been applied, "
                                  "check before sending it again."),
            "Unavailable": error("No worker is up; or the worker's speaker encoder is disabled (--encoder none) "
                                 "or still loading; or its voiceprint database (for segments, its record) is "
                                 "unreachable. Nothing was changed."),
        },
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "The balancer's --token, when it has one."},
            "token": {"type": "apiKey", "in": "query", "name": "token",
                      "description": "The same token as ?token= (for browsers, which cannot set headers on a "
                                     "WebSocket)."},
        },
    }


def ingest_frame() -> Schema:
    """balancer/packets.py parse_ingest."""
    return {
        "type": "object",
        "required": ["ACCOUNTCODE", "data"],
        "properties": {
            "ACCOUNTCODE": ACCOUNT,
            "data": {"type": "array", "minItems": 1, "maxItems": MAX_FRAME_SAMPLES,
                     "items": {"type": "integer", "minimum": -32768, "maximum": 32767},
                     "description": "int16 samples (800 for a 100 ms frame at 8 kHz), at most the balancer's "
                                    "--max-frame-seconds (1 s) of them at the frame's sample rate: more get a 400. "
                                    "(maxItems is 1 s at the highest rate.)"},
            "sample_rate": {"type": "integer", "enum": list(COMMON_RATES), "default": 8000,
                            "description": "Hz. The balancer takes 1000-192000; workers accept these by default "
                                           "(--accepted-rates) and refuse others with a 400."},
            "stream": {"type": "string", "pattern": STREAM_PATTERN,
                       "description": "The client's name for its stream, the same for each of its frames; with "
                                      "it, 'seq' is required and numbers the frame in it (1, 2, ...), so that a "
                                      "frame sent again after a failure, through any balancer, is answered as a "
                                      "duplicate once processed, and not recorded twice."},
            "seq": {**SEQ, "description": "With 'stream': the frame's number in it, from 1 (required). Without: "
                                          "only echoed in the reply (default 1)."},
        },
        "example": {"ACCOUNTCODE": "1691", "data": [0, 12, -40, 7], "sample_rate": 8000},
    }


def openapi_document(version: str) -> Document:
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "voicestream balancer REST API",
            "version": version,
            "description": "Voice activity and speaker detection for streamed audio, per account. Frames also "
                           "stream over a WebSocket: see /asyncapi.json. Every error is JSON {\"error\": \"...\"}.",
        },
        "tags": [{"name": "frames", "description": "Frames in, analysis out (the WebSocket is in /asyncapi.json)."},
                 {"name": "speakers", "description": "Voiceprints per account, kept by the workers."},
                 {"name": "voiceprints", "description": "Stateless embedding and scoring on any worker."},
                 {"name": "segments", "description": "Who spoke when, final: an account's speaker segments as its "
                                                     "record keeps them."},
                 {"name": "monitoring", "description": "For probes, load balancers and Prometheus: no token."}],
        # The token is needed only when the balancer runs with --token ({}: none).
        "security": [{}, {"bearer": []}, {"token": []}],
        "paths": {**balancer_paths(), **speaker_paths(), **segment_paths(), **stateless_paths()},
        "components": components(),
    }
