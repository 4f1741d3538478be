"""Property tests: random and mutated packets and WAVs never raise anything
but PacketError / AudioError, and whatever is accepted is well formed."""
from __future__ import annotations

import base64
import io
import json
import math
import struct

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balancer.packets import Header, Packet, PacketError, parse_ingest, parse_text_message
from voicestream.accounts import is_valid_account
from worker.audio import Audio, AudioError, decode_wav

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def wav_bytes(samples: np.ndarray, rate: int, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def tone(rate: int, seconds: float = 0.1, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


VALID_WAVS = [wav_bytes(tone(rate, channels=ch), rate, subtype)
              for rate, ch, subtype in [(8000, 1, "PCM_16"), (16000, 1, "PCM_16"), (16000, 2, "PCM_24"),
                                        (44100, 1, "FLOAT"), (8000, 1, "PCM_U8"), (16000, 1, "DOUBLE"),
                                        (22050, 3, "PCM_32"), (8000, 1, "ULAW")]]
FRAME = VALID_WAVS[0]


def valid_packet_texts() -> list[str]:
    return [
        "ACCOUNTCODE=1234",
        "ACCOUNTCODE=acct_9;lang=en",
        json.dumps({"text": "ACCOUNTCODE=1234", "binary_data": base64.b64encode(FRAME).decode()}),
        str({"text": "ACCOUNTCODE=1234", "binary_data": FRAME[:200]}),
        "CLOSE",
    ]


def check_parsed(result: object) -> None:
    assert result is None or isinstance(result, (Header, Packet))
    if isinstance(result, Header):
        assert is_valid_account(result.account)
    if isinstance(result, Packet):
        assert is_valid_account(result.account) and isinstance(result.wav, bytes) and result.wav


def parse(text: str) -> None:
    try:
        check_parsed(parse_text_message(text))
    except PacketError as exc:
        assert str(exc)  # names the problem


# --- mutations -----------------------------------------------------------------

STRUCTURE = list("{}[]()'\"\\:,;=b ") + ["nan", "NaN", "Infinity", "1e999", "-0", "\x00", "\ud800", "é", "'''", '"""',
                                          "9" * 5000, "__import__('os')", "ACCOUNTCODE="]


@st.composite
def mutated_text(draw, base: str) -> str:
    text = base
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "duplicate"]))
        pos = draw(st.integers(0, len(text)))
        piece = draw(st.one_of(st.sampled_from(STRUCTURE), st.text(max_size=8)))
        if op == "insert":
            text = text[:pos] + piece + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 20)):]
        elif op == "replace":
            text = text[:pos] + piece + text[pos + len(piece):]
        elif op == "truncate":
            text = text[:pos]
        else:
            text = text[:pos] + text[pos:pos + 50] + text[pos:]
    return text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)

literal_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
    | st.binary(max_size=40) | st.complex_numbers(allow_nan=True),
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.frozensets(st.integers() | st.text(max_size=5), max_size=3)
    | st.dictionaries(st.text(max_size=10) | st.integers(), children, max_size=4),
    max_leaves=20)


# --- packets -------------------------------------------------------------------

@FUZZ
@given(st.text(max_size=300))
def test_random_text_messages(text):
    parse(text)
    parse("{" + text)
    parse("ACCOUNTCODE=" + text)


@FUZZ
@given(st.data())
def test_mutated_valid_packets(data):
    base = data.draw(st.sampled_from(valid_packet_texts()))
    parse(data.draw(mutated_text(base)))


@FUZZ
@given(st.dictionaries(st.sampled_from(["text", "binary_data", "other"]), json_values, max_size=3))
def test_json_packets_with_any_field_types(obj):
    parse(json.dumps(obj))


@FUZZ
@given(st.dictionaries(st.sampled_from(["text", "binary_data", "other"]), literal_values, max_size=3))
def test_literal_packets_with_any_field_types(obj):
    parse(repr(obj))


@FUZZ
@given(literal_values)
def test_literals_that_are_not_dicts(value):
    parse("{" + repr(value)[1:] if repr(value).startswith(("[", "(")) else "{" + repr(value))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 3000), st.sampled_from(["[", "(", "{", "{'a':", '{"a":', "[[", "{'text': ["]))
def test_deep_nesting(depth, opener):
    closer = {"[": "]", "(": ")", "{": "}", "{'a':": "}", '{"a":': "}", "[[": "]]", "{'text': [": "]}"}[opener]
    parse("{'text': 'ACCOUNTCODE=1', 'binary_data': b'x', 'n': " + opener * depth + "1" + closer * depth + "}")
    parse('{"text": "ACCOUNTCODE=1", "binary_data": "AA==", "n": ' + "[" * depth + "]" * depth + "}")
    parse("{" + opener * depth)


@FUZZ
@given(st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["ACCOUNTCODE", "data", "sample_rate", "seq"]), json_values, max_size=4)
    .map(lambda d: json.dumps(d).encode()),
    st.builds(lambda data, rate, seq: json.dumps({"ACCOUNTCODE": "a1", "data": data, "sample_rate": rate,
                                                  "seq": seq}).encode(),
              st.lists(st.integers(-40000, 40000) | st.floats(allow_nan=True), max_size=50),
              st.integers(-10, 200000) | st.floats(allow_nan=True) | st.text(max_size=4),
              st.integers(-5, 2 ** 70) | st.none()),
))
def test_ingest_bodies(body):
    try:
        packet = parse_ingest(body)
    except PacketError as exc:
        assert str(exc)
        return
    assert is_valid_account(packet.account)
    check_audio(decode_wav(packet.wav, accepted_rates=tuple(range(1000, 192001))))


@FUZZ
@given(st.data())
def test_mutated_ingest_bodies(data):
    base = json.dumps({"ACCOUNTCODE": "1691", "data": [0, 5, -5, 32767], "sample_rate": 8000, "seq": 3})
    try:
        parse_ingest(data.draw(mutated_text(base)).encode("utf-8", "surrogatepass"))
    except PacketError as exc:
        assert str(exc)


# --- WAV decoding --------------------------------------------------------------

def check_audio(audio: Audio) -> None:
    assert audio.sample_rate in (8000, 16000)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1 and len(audio.samples) > 0
    assert np.isfinite(audio.samples).all() and np.abs(audio.samples).max() <= 1.0


def decode(data: bytes, **limits) -> None:
    try:
        audio = decode_wav(data, **limits)
    except AudioError as exc:
        assert str(exc)
        return
    check_audio(audio)


# Offsets of the canonical 44-byte header's fields and their struct formats.
HEADER_FIELDS = {"riff_size": (4, "<I"), "fmt_size": (16, "<I"), "format": (20, "<H"), "channels": (22, "<H"),
                 "rate": (24, "<I"), "byte_rate": (28, "<I"), "block_align": (32, "<H"), "bits": (34, "<H")}
LIES = st.sampled_from([0, 1, 2, 3, 7, 8, 255, 256, 1000, 8000, 15999, 16000, 65535, 2 ** 31 - 1, 2 ** 32 - 1])


@st.composite
def mutated_wav(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_WAVS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "lie", "data_size", "splice"]))
        if op == "truncate":
            data = data[:draw(st.integers(0, len(data)))]
        elif op == "flip" and data:
            i = draw(st.integers(0, min(len(data), 80) - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif op == "lie":
            offset, fmt = HEADER_FIELDS[draw(st.sampled_from(sorted(HEADER_FIELDS)))]
            value = draw(LIES) % (1 << (8 * struct.calcsize(fmt)))
            if len(data) >= offset + struct.calcsize(fmt):
                struct.pack_into(fmt, data, offset, value)
        elif op == "data_size":
            at = data.find(b"data")
            if at >= 0 and len(data) >= at + 8:
                struct.pack_into("<I", data, at + 4, draw(LIES))
        else:
            pos = draw(st.integers(0, len(data)))
            data[pos:pos] = draw(st.binary(max_size=16))
    return bytes(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data):
    decode(data)
    decode(b"RIFF" + data[:4] + b"WAVE" + data[4:])


@settings(max_examples=400, deadline=None)
@given(mutated_wav())
def test_mutated_wavs(data):
    decode(data)
    decode(data, max_seconds=0.05, accepted_rates=(8000, 16000))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.5, -1.0, 3e38, -3e38, math.nan, math.inf, -math.inf, 1e-45]),
                min_size=1, max_size=64),
       st.sampled_from(["FLOAT", "DOUBLE"]), st.sampled_from([8000, 16000, 44100]), st.integers(1, 3))
def test_float_wavs_with_nan_inf_and_huge_values(values, subtype, rate, channels):
    x = np.array(values * channels, dtype=np.float64).reshape(channels, -1).T
    data = wav_bytes(x, rate, subtype)
    decode(data)
    if not np.isfinite(x).all():
        with pytest.raises(AudioError, match="NaN or infinite"):
            decode_wav(data)


# --- hostile inputs found while writing these tests, kept as fixed examples ----

def lie(data: bytes, field: str, value: int) -> bytes:
    offset, fmt = HEADER_FIELDS[field]
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize("rate", [1_000_003, 2 ** 31 - 1, 15999])
def test_a_lying_sample_rate_is_refused_not_resampled(rate):
    # Resampling from 1000003 Hz took seconds per frame; from 2**31-1 Hz it
    # needed a 320 GiB filter (MemoryError, a 500 from the worker).
    with pytest.raises(AudioError, match=f"sample rate {rate} Hz not accepted"):
        decode_wav(lie(FRAME, "rate", rate))


def test_a_lying_channel_count_is_refused():
    with pytest.raises(AudioError, match="1000 channels"):
        decode_wav(lie(FRAME, "channels", 1000))


def test_accepted_formats_are_configurable():
    ulaw = VALID_WAVS[-1]
    with pytest.raises(AudioError, match="unsupported WAV encoding ULAW"):
        decode_wav(ulaw)
    assert decode_wav(ulaw, accepted_subtypes=frozenset({"ULAW"})).sample_rate == 8000


@pytest.mark.parametrize("text, message", [
    # json.loads raises a plain ValueError past 4300 digits
    ('{"text": "ACCOUNTCODE=1", "binary_data": "AA==", "n": ' + "9" * 5000 + "}", "neither JSON nor"),
    # a triple-quoted string hid the brackets after it from a hand-written scanner
    ("{'a': '''x'y''', 'b': [[[[[[[[[[[[1]]]]]]]]]]]], 'text': 'ACCOUNTCODE=1', 'binary_data': b'x'}",
     "nests too deeply"),
    ("{'text': 'ACCOUNTCODE=1', 'binary_data': b'x', 'n': [" + "1," * 100 + "]}", "too many parts"),
])
def test_hostile_packets(text, message):
    with pytest.raises(PacketError, match=message):
        parse_text_message(text)


def test_ingest_with_a_huge_integer():
    with pytest.raises(PacketError, match="must be JSON"):
        parse_ingest(b'{"ACCOUNTCODE": "a", "data": [' + b"9" * 5000 + b"]}")
