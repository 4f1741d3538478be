"""Packet parsing: the three WebSocket forms, HTTP ingest, and malformed input."""
from __future__ import annotations

import base64
import io
import json
import wave

import pytest

from balancer.packets import Header, Packet, PacketError, parse_header, parse_ingest, parse_text_message

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28)


def test_binary_pair_header_with_extra_fields():
    parsed = parse_text_message("ACCOUNTCODE=1234;lang=en; mode = fast")
    assert parsed == Header("1234", {"lang": "en", "mode": "fast"})


def test_json_form():
    text = json.dumps({"text": "ACCOUNTCODE=1234", "binary_data": base64.b64encode(WAV).decode()})
    assert parse_text_message(text) == Packet(Header("1234"), WAV)


def test_legacy_literal_form_is_what_str_of_a_dict_gives():
    text = str({"text": "ACCOUNTCODE=1234", "binary_data": WAV + b"'\"\\{[("})
    packet = parse_text_message(text)
    assert packet == Packet(Header("1234"), WAV + b"'\"\\{[(")


def test_close():
    assert parse_text_message("CLOSE") is None
    assert parse_text_message("  CLOSE\n") is None


@pytest.mark.parametrize("text, message", [
    ("ACCOUNTCODE=../../etc/passwd", "invalid ACCOUNTCODE"),
    ("ACCOUNTCODE=", "invalid ACCOUNTCODE"),
    ("ACCOUNTCODE=" + "a" * 65, "invalid ACCOUNTCODE"),
    ("ACCOUNTCODE=12 34", "invalid ACCOUNTCODE"),
    ("LANG=en", "no ACCOUNTCODE"),
    ("hello", "key=value"),
    ("x" * 5000, "longer than"),
    ('{"text": "ACCOUNTCODE=1", "binary_data": "***"}', "not valid base64"),
    ('{"text": "ACCOUNTCODE=1", "binary_data": ""}', "empty"),
    ('{"text": "ACCOUNTCODE=1"}', "base64 string"),
    ('{"text": 5, "binary_data": "AAAA"}', "'text' as a string"),
    ('{"text": "ACCOUNTCODE=1", "binary_data": "AAAA"', "neither JSON nor a Python dict literal"),
    ("{'text': 'ACCOUNTCODE=1', 'binary_data': 'not bytes'}", "as bytes"),
    ("{'text': 'ACCOUNTCODE=1', 'binary_data': __import__('os').system('true')}", "neither JSON nor"),
    ("{'text': 'ACCOUNTCODE=1', 'binary_data': b'x', 'n': " + "[" * 50 + "]" * 50 + "}", "nests too deeply"),
    ("{" + "[" * 100000, "nests too deeply"),
    ("{1, 2}", "must be an object"),
])
def test_malformed_text_messages_name_the_problem(text, message):
    with pytest.raises(PacketError, match=message):
        parse_text_message(text)


def test_account_length_limit_is_configurable():
    assert parse_header("ACCOUNTCODE=abcdef", max_account_length=6).account == "abcdef"
    with pytest.raises(PacketError, match="1-5 characters"):
        parse_header("ACCOUNTCODE=abcdef", max_account_length=5)


def test_ingest_builds_a_wav_of_the_samples():
    packet = parse_ingest(json.dumps({"ACCOUNTCODE": "1691", "data": [0, 1, -1, 32767, -32768]}).encode())
    assert packet.account == "1691"
    with wave.open(io.BytesIO(packet.wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (8000, 1, 2, 5)
        assert w.readframes(5) == b"\x00\x00\x01\x00\xff\xff\xff\x7f\x00\x80"
    assert parse_ingest(json.dumps({"ACCOUNTCODE": "a", "data": [0], "sample_rate": 16000}).encode()).wav[24:28] == \
        (16000).to_bytes(4, "little")


@pytest.mark.parametrize("body, message", [
    (b"not json", "must be JSON"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({"data": [1]}).encode(), "invalid ACCOUNTCODE"),
    (json.dumps({"ACCOUNTCODE": "a/b", "data": [1]}).encode(), "invalid ACCOUNTCODE"),
    (json.dumps({"ACCOUNTCODE": "a", "data": []}).encode(), "non-empty list"),
    (json.dumps({"ACCOUNTCODE": "a", "data": "abc"}).encode(), "non-empty list"),
    (json.dumps({"ACCOUNTCODE": "a", "data": [1.5]}).encode(), "only integers"),
    (json.dumps({"ACCOUNTCODE": "a", "data": [40000]}).encode(), "only integers"),
    (json.dumps({"ACCOUNTCODE": "a", "data": [True]}).encode(), "only integers"),
    (b'{"ACCOUNTCODE": "a", "data": [NaN]}', "only integers"),
    (json.dumps({"ACCOUNTCODE": "a", "data": [1], "sample_rate": "8k"}).encode(), "sample_rate"),
    (json.dumps({"ACCOUNTCODE": "a", "data": [0] * 8001}).encode(), "limit 1 s"),
])
def test_malformed_ingest_names_the_problem(body, message):
    with pytest.raises(PacketError, match=message):
        parse_ingest(body, max_seconds=1.0)
