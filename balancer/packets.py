"""Client packets: pure parsing, no I/O.

A packet is an account code plus one WAV frame, in one of three forms:
  1. text "ACCOUNTCODE=1234[;key=value...]" followed by a binary message (the WAV);
  2. one JSON text {"text": "ACCOUNTCODE=1234", "binary_data": "<base64 WAV>"};
  3. the legacy Python literal {'text': 'ACCOUNTCODE=1234', 'binary_data': b'RIFF...'}
     (what str(dict) gives), read with ast.literal_eval, never eval.

A client that may reconnect names its stream and numbers its frames in the
text part, "ACCOUNTCODE=1234;stream=call-7;seq=42" (HTTP ingest: "stream" and
"seq" in the body), so that a frame it sends again after a reconnect is
known for the one it is (docs/protocol.md#resume-after-a-reconnect).
"""
from __future__ import annotations

import ast
import base64
import binascii
import io
import json
import tokenize
from dataclasses import dataclass, field

from voicestream.accounts import ACCOUNT_PATTERN, MAX_ACCOUNT_LENGTH, invalid_account_message, is_valid_account
from voicestream.batch import MAX_SEQ
from voicestream.wav import encode_wav

CLOSE = "CLOSE"
MAX_HEADER_CHARS = 1024
MAX_LITERAL_DEPTH = 4
# {'text': '...', 'binary_data': b'...'} is 9 tokens; a few spare for extra keys.
MAX_LITERAL_TOKENS = 64
INGEST_SHAPE = '{"ACCOUNTCODE": ..., "data": [int16 samples], "sample_rate": 8000}'
# A client's name for its stream: what an account code may hold, so that it
# can be logged and sent on as it is.
MAX_STREAM_NAME = MAX_ACCOUNT_LENGTH
STREAM_NAME = ACCOUNT_PATTERN
# The worker knows a stream by its id: a client's name goes there behind this
# prefix, which the balancer's own ids (uuid hex, "http-" + hex) never have.
CLIENT_STREAM_PREFIX = "c:"


def client_stream_id(name: str) -> str:
    """The id a client's stream name has at the workers."""
    return f"{CLIENT_STREAM_PREFIX}{name}"


class PacketError(ValueError):
    """A packet the balancer cannot accept; the message tells the client why."""


@dataclass(frozen=True, slots=True)
class Header:
    """The text part: the account code, the client's stream name and the
    frame's number in it when it gave them, and any further key=value fields."""
    account: str
    fields: dict[str, str] = field(default_factory=dict)
    stream: str | None = None  # with seq: a numbered frame of a stream the client named
    seq: int | None = None

    @property
    def stream_id(self) -> str | None:
        """The id the workers know the client's stream by."""
        return None if self.stream is None else client_stream_id(self.stream)


@dataclass(frozen=True, slots=True)
class Packet:
    header: Header
    wav: bytes

    @property
    def account(self) -> str:
        return self.header.account


def parse_header(text: str, max_account_length: int = 64) -> Header:
    """'ACCOUNTCODE=1234;lang=en' -> Header('1234', {'lang': 'en'})."""
    if len(text) > MAX_HEADER_CHARS:
        raise PacketError(f"text part longer than {MAX_HEADER_CHARS} characters")
    fields: dict[str, str] = {}
    for part in text.strip().split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise PacketError(f"text part must be key=value pairs separated by ';', got {part.strip()[:40]!r}")
        fields[key.strip()] = value.strip()
    account = fields.pop("ACCOUNTCODE", None)
    if account is None:
        raise PacketError("text part has no ACCOUNTCODE=...")
    check_account(account, max_account_length)
    if "stream" not in fields:  # a seq alone is the client's own field, as it always was
        return Header(account, fields)
    stream = fields.pop("stream")
    seq = fields.pop("seq", None)
    if seq is None:
        check_stream(stream)
        raise PacketError(f"stream={stream} needs seq=<n>: the frame's number in its stream, from 1")
    return Header(account, fields, *check_numbering(stream, int(seq) if seq.isascii() and seq.isdigit() else seq))


def check_stream(stream: object) -> str:
    if not (isinstance(stream, str) and STREAM_NAME.fullmatch(stream)):
        shown = repr(stream[:80]) if isinstance(stream, str) else type(stream).__name__
        raise PacketError(f"invalid stream {shown}: use 1-{MAX_STREAM_NAME} characters of A-Z a-z 0-9 _ -")
    return stream


def check_numbering(stream: object, seq: object) -> tuple[str, int]:
    """A client's stream name and its frame's number, checked."""
    name = check_stream(stream)
    if type(seq) is not int or not 1 <= seq < MAX_SEQ:
        shown = repr(seq[:40]) if isinstance(seq, str) else repr(seq) if isinstance(seq, int | float) else \
            type(seq).__name__
        raise PacketError(f"invalid seq {shown}: a frame's number in its stream is a whole number from 1 to "
                          f"{MAX_SEQ - 1}")
    return name, seq


def check_account(account: object, max_length: int = 64) -> str:
    if not is_valid_account(account, max_length):
        raise PacketError(invalid_account_message(account, max_length))
    return account


def parse_text_message(text: str, max_account_length: int = 64) -> Header | Packet | None:
    """A WebSocket text message: None for CLOSE, a Header that waits for its
    binary part, or a whole Packet (JSON or legacy literal form)."""
    stripped = text.strip()
    if stripped == CLOSE:
        return None
    if stripped.startswith("{"):
        return parse_dict_packet(stripped, max_account_length)
    return parse_header(stripped, max_account_length)


def parse_dict_packet(text: str, max_account_length: int = 64) -> Packet:
    try:
        obj = json.loads(text)
        form = "JSON"
    except (ValueError, RecursionError):  # ValueError: also ints over 4300 digits
        obj = _literal(text)
        form = "literal"
    if not isinstance(obj, dict):
        raise PacketError(f"{form} packet must be an object with 'text' and 'binary_data'")
    text_part, data = obj.get("text"), obj.get("binary_data")
    if not isinstance(text_part, str):
        raise PacketError(f"{form} packet needs 'text' as a string like 'ACCOUNTCODE=1234'")
    header = parse_header(text_part, max_account_length)
    if form == "JSON":
        if not isinstance(data, str):
            raise PacketError("JSON packet needs 'binary_data' as a base64 string")
        try:
            wav = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise PacketError("'binary_data' is not valid base64") from None
    else:
        if not isinstance(data, bytes):
            raise PacketError("literal packet needs 'binary_data' as bytes (b'...')")
        wav = data
    if not wav:
        raise PacketError("'binary_data' is empty")
    return Packet(header, wav)


def _literal(text: str) -> object:
    # literal_eval builds only constants and containers. Python's own
    # tokenizer (which knows every string form, so brackets inside strings
    # cannot hide nesting) first bounds the nesting and the number of parts,
    # so a hostile message can exhaust neither the parser's stack nor memory.
    _check_literal_shape(text)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise PacketError("packet is neither JSON nor a Python dict literal") from None


def _check_literal_shape(text: str) -> None:
    depth = tokens = 0
    skipped = (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT)
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in skipped:
                continue
            tokens += 1
            if tokens > MAX_LITERAL_TOKENS:
                raise PacketError("literal packet has too many parts: send {'text': ..., 'binary_data': b'...'}")
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
                if depth > MAX_LITERAL_DEPTH:
                    raise PacketError("packet nests too deeply")
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
    except PacketError:
        raise
    except (tokenize.TokenError, SyntaxError, ValueError):
        raise PacketError("packet is neither JSON nor a Python dict literal") from None


def parse_ingest(body: bytes, max_account_length: int = 64, max_seconds: float = 10.0) -> Packet:
    """HTTP ingest: {"ACCOUNTCODE": "1691", "data": [int16...], "sample_rate": 8000}."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):  # ValueError: bad JSON, bad UTF-8, ints over 4300 digits
        raise PacketError(f"body must be JSON: {INGEST_SHAPE}") from None
    if not isinstance(obj, dict):
        raise PacketError("body must be a JSON object")
    account = check_account(obj.get("ACCOUNTCODE"), max_account_length)
    rate = obj.get("sample_rate", 8000)
    if type(rate) is not int or not 1000 <= rate <= 192000:
        raise PacketError("'sample_rate' must be an integer between 1000 and 192000")
    data = obj.get("data")
    if not isinstance(data, list) or not data:
        raise PacketError("'data' must be a non-empty list of int16 samples")
    if len(data) > max_seconds * rate:
        raise PacketError(f"'data' holds {len(data) / rate:.2f} s of audio, limit {max_seconds:g} s")
    if not all(type(v) is int and -32768 <= v <= 32767 for v in data):
        raise PacketError("'data' must hold only integers in [-32768, 32767]")
    if "stream" in obj:
        if "seq" not in obj:
            check_stream(obj["stream"])
            raise PacketError("'stream' needs 'seq': the frame's number in its stream, from 1")
        return Packet(Header(account, {}, *check_numbering(obj["stream"], obj["seq"])), encode_wav(data, rate))
    # Without a stream, seq is the client's own: only given back in the reply.
    fields = {"seq": str(obj["seq"])} if type(obj.get("seq")) is int and obj["seq"] >= 0 else {}
    return Packet(Header(account, fields), encode_wav(data, rate))

