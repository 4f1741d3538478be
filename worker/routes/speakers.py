"""The speaker REST API: a blueprint whose views call the worker's
SpeakerService (worker/speakers/service.py). The balancer routes
/accounts/<code>/... to the account's worker and /embed, /compare to any.

    POST   /accounts/<code>/speakers/<name>   enroll from a WAV (raw body or multipart 'file')
    GET    /accounts/<code>/speakers          list voiceprints (metadata)
    GET    /accounts/<code>/speakers/<name>   one voiceprint; ?vector=1 adds the vector
    DELETE /accounts/<code>/speakers/<name>   delete one
    DELETE /accounts/<code>/speakers          delete all of the account's
    POST   /accounts/<code>/verify            score a WAV against every enrolled speaker
    GET    /accounts/<code>/settings          the account's decision threshold (its own or the worker's)
    PUT    /accounts/<code>/settings          {"threshold": x}: the account's own, for this encoder
    DELETE /accounts/<code>/settings          back to the worker's threshold
    POST   /embed                             WAV -> embedding, encoder, level in dB
    POST   /compare                           two voiceprints -> cosine score
"""
from __future__ import annotations

import io
import re

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from voicestream.accounts import invalid_account_message, is_valid_account

from ..audio import Audio, AudioError, decode_wav
from ..speakers.service import SpeakerError, SpeakerService, compare
from ..storage.protocol import StorageUnavailable
from . import current_worker

SPEAKER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def check_account(code: str) -> None:
    if not is_valid_account(code):
        raise SpeakerError(400, invalid_account_message(code))


def check_name(name: str) -> None:
    if SPEAKER_NAME.fullmatch(name) is None:
        raise SpeakerError(400, "speaker name must be 1-64 characters of A-Z a-z 0-9 _ . - "
                                "and start with a letter, digit or _")
    if name.lower() == "unknown":
        raise SpeakerError(400, "'unknown' is reserved: it is the decision when no enrolled speaker matches")


def _in_memory(*args: object, **kwargs: object) -> io.BytesIO:
    return io.BytesIO()


def multipart_file(data: bytes) -> bytes:
    """The 'file' part of a multipart body, parsed in memory: werkzeug's
    default spools parts over 500 KB to a temporary file, and voice
    recordings must not touch the disk."""
    parser = FormDataParser(stream_factory=_in_memory, max_form_parts=16)
    try:
        _, form, files = parser.parse(io.BytesIO(data), request.mimetype, len(data), request.mimetype_params)
    except HTTPException as exc:
        raise SpeakerError(exc.code or 400, f"unreadable multipart body: {exc.description}") from None
    upload = files.get("file")
    if upload is None:
        names = [name or "(unnamed)" for name in [*files, *form]]  # a part may have no name at all
        raise SpeakerError(400, f"multipart body needs a 'file' part with the WAV; got parts: "
                                f"{', '.join(names) or 'none'}")
    return upload.read()


def wav_from_request() -> Audio:
    """The WAV of a raw body (audio/wav, application/octet-stream, ...) or of
    a multipart form's 'file' part, up to the worker's --max-upload-seconds."""
    max_seconds = current_worker().config.max_upload_seconds
    data = request.get_data()
    if request.mimetype == "multipart/form-data":
        data = multipart_file(data)
    try:
        audio = decode_wav(data, max_seconds=float("inf"))
    except AudioError as exc:
        raise SpeakerError(400, str(exc)) from None
    if audio.seconds > max_seconds:
        raise SpeakerError(413, f"audio too long: {audio.seconds:.2f} s, limit {max_seconds:g} s")
    return audio


def flag(name: str) -> bool:
    return request.args.get(name, "").lower() in ("1", "true", "yes")


bp = Blueprint("speakers", __name__)


def speakers() -> SpeakerService:
    return current_worker().speakers


@bp.before_request
def read_body_first() -> None:
    # Enrollment WAVs are larger than frames: their own limit.
    request.max_content_length = current_worker().config.max_upload_bytes
    # A reply sent with the body unread makes gunicorn drop the keep-alive
    # connection after it, and the balancer's next request on that pooled
    # connection fails. Reading it first (it is cached) keeps every error
    # a clean reply.
    try:
        request.get_data()
    except RequestEntityTooLarge:
        raise SpeakerError(413, f"request body too large: limit {request.max_content_length} bytes") from None


@bp.errorhandler(SpeakerError)
def speaker_error(exc: SpeakerError) -> ResponseReturnValue:
    return jsonify(error=exc.message), exc.status


@bp.errorhandler(StorageUnavailable)
def store_unavailable(exc: StorageUnavailable) -> ResponseReturnValue:
    # The store cannot serve (the shared database is down, the SQLite file
    # locked or unreadable): frames go on (their rows spool), but what reads
    # or changes voiceprints waits for it; nothing was changed.
    return jsonify(error=f"voiceprint database unavailable, try again shortly: {exc}"), 503


@bp.post("/accounts/<code>/speakers/<name>")
def enroll(code: str, name: str) -> ResponseReturnValue:
    check_account(code)
    check_name(name)
    speakers().require_encoder()  # a 503 says more than a complaint about the WAV
    return jsonify(speakers().enroll(code, name, wav_from_request())), 201


@bp.get("/accounts/<code>/speakers")
def list_speakers(code: str) -> ResponseReturnValue:
    check_account(code)
    return jsonify(speakers().list(code))


@bp.get("/accounts/<code>/speakers/<name>")
def get_speaker(code: str, name: str) -> ResponseReturnValue:
    check_account(code)
    check_name(name)
    return jsonify(speakers().get(code, name, flag("vector")))


@bp.delete("/accounts/<code>/speakers/<name>")
def delete_speaker(code: str, name: str) -> ResponseReturnValue:
    check_account(code)
    check_name(name)
    return jsonify(speakers().delete(code, name))


@bp.delete("/accounts/<code>/speakers")
def delete_speakers(code: str) -> ResponseReturnValue:
    check_account(code)
    return jsonify(speakers().delete_all(code))


@bp.post("/accounts/<code>/verify")
def verify(code: str) -> ResponseReturnValue:
    check_account(code)
    speakers().require_encoder()
    return jsonify(speakers().verify(code, wav_from_request()))


@bp.get("/accounts/<code>/settings")
def get_settings(code: str) -> ResponseReturnValue:
    check_account(code)
    return jsonify(speakers().settings(code))


@bp.put("/accounts/<code>/settings")
def put_settings(code: str) -> ResponseReturnValue:
    check_account(code)
    body = request.get_json(force=True, silent=True)  # whatever the Content-Type says
    if body is None:
        raise SpeakerError(400, "body must be JSON: {\"threshold\": <number from -1 to 1>}")
    return jsonify(speakers().set_settings(code, body))


@bp.delete("/accounts/<code>/settings")
def delete_settings(code: str) -> ResponseReturnValue:
    check_account(code)
    return jsonify(speakers().delete_settings(code))


@bp.post("/embed")
def embed() -> ResponseReturnValue:
    speakers().require_encoder()
    return jsonify(speakers().embed(wav_from_request()))


@bp.post("/compare")
def compare_voiceprints() -> ResponseReturnValue:
    body = request.get_json(silent=True)
    if body is None:
        raise SpeakerError(400, "body must be JSON: {\"a\": <voiceprint>, \"b\": <voiceprint>}")
    return jsonify(compare(body))
