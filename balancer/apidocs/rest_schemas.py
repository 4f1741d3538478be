"""Schemas of the REST bodies in the OpenAPI document (OpenAPI 3.0 dialect):
what worker/speakers/service.py, worker/storage/voiceprints.py and
worker/routes/segments.py return, what POST /compare reads (service.py
parse_voiceprint), and the balancer's / and /health.
"""
from __future__ import annotations

from typing import Any

from ..config import EVENT_LOOPS
from .schemas import ACCOUNT, FRAME_TIME, SPEAKER_NAME, Schema


def obj(properties: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    """An object whose properties are all required unless required names them."""
    return {"type": "object", "required": list(properties) if required is None else required,
            "properties": properties, **extra}


ENCODER: Schema = {"type": "string", "example": "ge2e",
                   "description": "The speaker encoder that made it: ecapa or ge2e (the worker's --encoder)."}
MODEL: Schema = {"type": "string", "example": "39373b86598f",
                 "description": "Fingerprint of the encoder's weights: scores compare only within one model."}
DIM: Schema = {"type": "integer", "minimum": 1, "description": "Length of the vector."}
VECTOR: Schema = {"type": "array", "items": {"type": "number"}, "minItems": 1,
                  "description": "Unit-length embedding, 7 decimals."}
SECONDS: Schema = {"type": "number", "minimum": 0}
MS: Schema = {"type": "number", "minimum": 0, "description": "Time the worker spent, milliseconds."}
STAMP: Schema = {"type": "string", "format": "date-time", "example": "2024-05-01T12:00:00.000000Z"}
DB: Schema = {"type": "number", "maximum": 0, "description": "RMS level in dBFS; digital silence is -100."}
WORKER_STATES: Schema = {"type": "object", "additionalProperties": {"type": "string", "enum": ["up", "down"]},
                         "description": "Each worker URL the balancer was given, and whether it is in the ring.",
                         "example": {"http://127.0.0.1:7001": "up", "http://127.0.0.1:7002": "down"}}

VOICEPRINT_FIELDS: dict[str, Schema] = {
    "name": SPEAKER_NAME,
    "encoder": ENCODER,
    "model": MODEL,
    "dim": DIM,
    "samples": {"type": "integer", "minimum": 1, "description": "Enrolled samples combined in it."},
    "speech_seconds": {**SECONDS, "description": "Seconds of speech over all its samples."},
    "created": STAMP,
    "updated": STAMP,
}
VOICEPRINT = obj(VOICEPRINT_FIELDS)
VOICEPRINT_INPUT = obj(
    {"encoder": {**ENCODER, "minLength": 1}, "model": {**MODEL, "minLength": 1},
     "dim": {**DIM, "description": "Optional; if given, the vector's length."},
     "vector": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 4096,
                "description": "Finite numbers, not all zero."},
     "embedding": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 4096,
                   "description": "Read when 'vector' is absent (as POST /embed returns it)."}},
    required=["encoder", "model"],
    anyOf=[{"required": ["vector"]}, {"required": ["embedding"]}],
    description="A voiceprint (GET /accounts/{account}/speakers/{name}?vector=1) or an embedding (POST /embed).")

THRESHOLD: Schema = {"type": "number", "minimum": -1, "maximum": 1, "example": 0.75,
                      "description": "Cosine score the best speaker must reach to be named."}
THRESHOLD_SOURCE: Schema = {"type": "string", "enum": ["account", "worker"],
                            "description": "account: the account's own (PUT /accounts/{account}/settings); "
                                           "worker: the worker's --speaker-threshold."}
SETTINGS_FIELDS: dict[str, Schema] = {
    "account": ACCOUNT,
    "encoder": ENCODER,
    "threshold": {**THRESHOLD, "description": "The threshold in use for this encoder kind."},
    "threshold_source": THRESHOLD_SOURCE,
    "worker_threshold": {"type": "number", "description": "The worker's own threshold."},
    "updated": {**STAMP, "nullable": True, "description": "When the account set its own; null when it has none."},
}
SETTINGS = obj(SETTINGS_FIELDS)

# GET /accounts/{account}/segments: worker/routes/segments.py's limits, and
# ?since= as it reads it: microseconds (voicestream/stamps.py check_stamp) or
# a stamp's text (text_stamp), the fraction optional.
SEGMENTS_DEFAULT_LIMIT = 100
SEGMENTS_MAX_LIMIT = 1000
SEGMENTS_MAX_STREAM_LENGTH = 256
SINCE_PATTERN = r"^(\d{1,17}|\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?)$"
# voicestream/events.py Segment as the record keeps it, with its stream.
SEGMENT = obj({
    "type": {"type": "string", "enum": ["segment"]},
    "speaker": {"type": "string", "description": "An enrolled speaker's name, or 'unknown'."},
    "score": {"type": "number", "nullable": True,
              "description": "The speaker's mean window score over the segment (unknown: the best voiceprint's), "
                             "2 places; null when no window was scored."},
    "start": {**FRAME_TIME, "description": "Its first frame's stamp, as that frame's log line starts."},
    "end": {**FRAME_TIME, "description": "Its last frame's stamp."},
    "start_seq": {"type": "integer", "minimum": 0, "description": "Its first frame's number in its stream."},
    "end_seq": {"type": "integer", "minimum": 0, "description": "Its last frame's number in its stream."},
    "frames": {"type": "integer", "minimum": 1, "description": "Frames in it."},
    "final": {"type": "boolean", "enum": [True], "description": "Always true: a segment's labels are final."},
    "stream": {"type": "string", "description": "The stream (client connection) its frames came in."},
})

REST_SCHEMAS: dict[str, Schema] = {
    "Voiceprint": VOICEPRINT,
    "AccountVoiceprint": obj({"account": ACCOUNT, **VOICEPRINT_FIELDS,
                              "vector": {**VECTOR, "description": "Only with ?vector=1: the unit-length vector "
                                                                  "that is scored, 7 decimals."}},
                             required=["account", *VOICEPRINT_FIELDS]),
    "Enrollment": obj({"account": ACCOUNT, **VOICEPRINT_FIELDS,
                       "sample_speech_seconds": {**SECONDS, "description": "Seconds of speech in this WAV."},
                       "ms": MS}),
    "Speakers": obj({"account": ACCOUNT, "speakers": {"type": "array", "items": {"$ref": "#/components/schemas/"
                                                                                        "Voiceprint"}}}),
    "Deleted": obj({"account": ACCOUNT, "deleted": {"type": "array", "items": SPEAKER_NAME, "minItems": 1,
                                                    "maxItems": 1}}),
    "DeletedCount": obj({"account": ACCOUNT, "deleted_count": {"type": "integer", "minimum": 0}}),
    "Verification": obj(
        {"account": ACCOUNT,
         "decision": {"type": "string", "description": "The best name if its score reaches the threshold, else "
                                                       "'unknown'."},
         "best": {"type": "string", "description": "The best-scoring name, even below the threshold."},
         "score": {"type": "number", "description": "The best score (cosine)."},
         "match": {"type": "boolean", "description": "The decision is an enrolled speaker."},
         "threshold": {"type": "number", "description": "The threshold the decision used."},
         "threshold_source": THRESHOLD_SOURCE,
         "margin": {"type": "number", "minimum": 0,
                    "description": "How far the best score must be above the second best for a name (with two "
                                   "or more speakers): GE2E 0.08, measured leave one speaker out."},
         "scores": {"type": "object", "additionalProperties": {"type": "number"},
                    "description": "Every usable voiceprint's score, best first."},
         "encoder": ENCODER, "model": MODEL,
         "speech_seconds": {**SECONDS, "description": "Seconds of speech the score used."},
         "ms": MS,
         "skipped": {"type": "array", "description": "Voiceprints made by another encoder: not scored.",
                     "items": obj({"name": SPEAKER_NAME, "encoder": ENCODER, "model": MODEL,
                                   "reason": {"type": "string"}})}},
        required=["account", "decision", "best", "score", "match", "threshold", "threshold_source", "margin", "scores",
                  "encoder", "model", "speech_seconds", "ms"]),
    "Settings": SETTINGS,
    "SettingsDeleted": obj({**SETTINGS_FIELDS, "deleted": {"type": "boolean",
                                                           "description": "The account had a threshold of its own."}}),
    "SettingsRequest": obj({"threshold": THRESHOLD}, additionalProperties=False),
    "Embedding": obj({"encoder": ENCODER, "model": MODEL, "dim": DIM, "embedding": VECTOR,
                      "db": {**DB, "description": "Level of the whole WAV, dBFS."},
                      "speech_db": {**DB, "description": "Level of its speech, dBFS."},
                      "seconds": {**SECONDS, "description": "Length of the WAV."},
                      "speech_seconds": {**SECONDS, "description": "Seconds of speech embedded."}}),
    "VoiceprintInput": VOICEPRINT_INPUT,
    "ComparisonRequest": obj({"a": {"$ref": "#/components/schemas/VoiceprintInput"},
                              "b": {"$ref": "#/components/schemas/VoiceprintInput"}}),
    "Comparison": obj({"score": {"type": "number", "minimum": -1, "maximum": 1, "description": "Cosine, 6 decimals."},
                       "encoder": ENCODER, "model": MODEL}),
    "Segment": SEGMENT,
    "Segments": obj({"account": ACCOUNT,
                     "segments": {"type": "array", "items": {"$ref": "#/components/schemas/Segment"}},
                     "more": {"type": "boolean", "description": "The limit cut the list: there are more."}}),
    "ServiceInfo": obj({"service": {"type": "string", "example": "voice stream balancer"},
                        "websocket": {"type": "string", "example": "/ws",
                                      "description": "The WebSocket path (/ also upgrades)."},
                        "workers": WORKER_STATES}),
    "Health": obj({
        "status": {"type": "string", "enum": ["ok", "degraded"], "description": "degraded: no worker is up."},
        "workers": WORKER_STATES,
        "connections": {"type": "integer", "minimum": 0, "description": "Open WebSockets."},
        "clients": {"type": "integer", "minimum": 0,
                    "description": "WebSockets plus HTTP requests in progress (--max-connections counts these)."},
        "frames_in_flight": {"type": "integer", "minimum": 0},
        "database": {"type": "object", "additionalProperties": {"type": "object"},
                     "description": "Per worker URL, what its last /health said of its database: "
                                    "{\"mode\": \"embedded\"} or the shared PostgreSQL's state."},
        "event_loop": {"type": "string", "enum": list(EVENT_LOOPS),
                       "description": "The balancer's event loop (--event-loop)."},
    }),
}
