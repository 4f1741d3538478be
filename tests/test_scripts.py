"""voicetools.split and voicetools.replay (voicestream-split and
voicestream-replay) on real WAVs and a real running system."""
from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from balancer.packets import Header, Packet, parse_header, parse_text_message
from voicestream.wav import encode_wav
from voicetools.cluster import System, free_port, make_system
from voicetools.replay import (
    FORMS,
    AccountStats,
    ReplayOptions,
    Target,
    account_for,
    encode,
    format_table,
    load_frames,
    replay,
    targets_from_dirs,
    unique_accounts,
)
from voicetools.split import chunk_dir_for, frame_bounds, frame_samples, split_wav

REPO = Path(__file__).resolve().parents[1]
DATA_WAVS = sorted((REPO / "data").glob("*.wav"))


def test_the_project_ships_sample_wavs_at_8_and_16_khz():
    infos = [sf.info(str(p)) for p in DATA_WAVS]
    assert {i.samplerate for i in infos} == {8000, 16000}
    for path, info in zip(DATA_WAVS, infos, strict=True):
        assert (info.channels, info.subtype) == (1, "PCM_16"), path.name
        assert 5 <= info.duration <= 15, path.name


@pytest.fixture(params=[p.name for p in DATA_WAVS] + ["shared:sample1.wav"])
def source_wav(request: pytest.FixtureRequest, speech: Callable[[str], Path]) -> Path:
    name: str = request.param
    if name.startswith("shared:"):
        return speech(name.removeprefix("shared:"))
    return REPO / "data" / name


def read_chunks(directory: Path, dtype: str = "int16") -> list[np.ndarray]:
    return [sf.read(str(p), dtype=dtype, always_2d=True)[0] for p in sorted(directory.glob("chunk_*.wav"))]


@pytest.mark.parametrize("frame_ms", [100, 30])
def test_split_gives_frames_that_reassemble_the_source_exactly(source_wav, frame_ms, tmp_path):
    source, rate = sf.read(str(source_wav), dtype="int16", always_2d=True)
    info = sf.info(str(source_wav))

    result = split_wav(source_wav, tmp_path / "chunks", frame_ms=frame_ms)

    frame_len = rate * frame_ms // 1000
    expected = math.ceil(len(source) / frame_len)
    chunk_files = sorted((tmp_path / "chunks").glob("chunk_*.wav"))
    assert result.frames == len(chunk_files) == expected
    assert chunk_files[0].name == "chunk_00000.wav"
    assert chunk_files[-1].name == f"chunk_{expected - 1:05d}.wav"
    for path in chunk_files:
        chunk = sf.info(str(path))
        assert (chunk.samplerate, chunk.channels, chunk.subtype) == (rate, info.channels, info.subtype)
    chunks = read_chunks(tmp_path / "chunks")
    assert all(len(c) == frame_len for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= frame_len
    np.testing.assert_array_equal(np.concatenate(chunks), source)


def test_split_keeps_channels_and_24_bit_samples_exactly(tmp_path):
    # A stereo 24-bit file made from a real sample: left as recorded, right inverted.
    mono, rate = sf.read(str(REPO / "data" / "us_male_8k.wav"), dtype="int32")
    stereo = np.stack([mono, -mono], axis=1) // 256 * 256  # 24-bit values in int32's top bits
    src = tmp_path / "stereo24.wav"
    sf.write(str(src), stereo, rate, subtype="PCM_24")

    result = split_wav(src, tmp_path / "chunks", frame_ms=100)

    assert (result.channels, result.subtype, result.sample_rate) == (2, "PCM_24", rate)
    info = sf.info(str(tmp_path / "chunks" / "chunk_00000.wav"))
    assert (info.channels, info.subtype) == (2, "PCM_24")
    np.testing.assert_array_equal(np.concatenate(read_chunks(tmp_path / "chunks", "int32")), stereo)


def test_resplitting_replaces_the_previous_frames(tmp_path):
    src = REPO / "data" / "us_female_16k.wav"
    out = tmp_path / "chunks"
    split_wav(src, out, frame_ms=20)
    result = split_wav(src, out, frame_ms=100)
    assert len(list(out.glob("chunk_*.wav"))) == result.frames == math.ceil(sf.info(str(src)).frames / 1600)


def test_frame_arithmetic():
    assert frame_samples(8000, 100) == 800
    assert frame_samples(16000, 100) == 1600
    assert frame_samples(44100, 100) == 4410
    assert frame_bounds(2500, 1000) == [(0, 1000), (1000, 2000), (2000, 2500)]
    assert frame_bounds(0, 1000) == []
    assert chunk_dir_for(Path("data/call 1.wav"), Path("out")) == Path("out/chunks_call 1")


def run_tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """python -m voicetools.<module> in the checkout, as a user runs it."""
    return subprocess.run([sys.executable, "-m", f"voicetools.{module}", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_split_command_line(tmp_path):
    done = run_tool("split", "data/us_male_8k.wav", "--out-dir", str(tmp_path), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"data/us_male_8k.wav -> {tmp_path}/chunks_us_male_8k/: "
                           "127 frames of 100 ms (12.62 s, 8000 Hz, 1 ch, PCM_16)\n")
    assert len(list((tmp_path / "chunks_us_male_8k").glob("chunk_*.wav"))) == 127

    missing = run_tool("split", str(tmp_path / "nope.wav"), "--out-dir", str(tmp_path))
    assert missing.returncode == 1
    assert missing.stderr == f"voicestream-split: {tmp_path / 'nope.wav'}: no such file\n"

    bad = run_tool("split", "--frame-ms", "0")
    assert bad.returncode == 2
    assert "--frame-ms must be positive" in bad.stderr


# ------------------------------------------------------------------ replay

def test_account_names_derived_from_directories():
    assert account_for(Path("data/chunks_us_male_8k")) == "us_male_8k"
    assert account_for(Path("x/chunks_call #3 (b).v2")) == "call__3__b__v2"
    assert account_for(Path("chunks_")) == "account"
    assert len(account_for(Path("chunks_" + "a" * 100))) == 64
    assert unique_accounts(["a", "b", "a"]) == ["a", "b", "a_2"]


@pytest.mark.parametrize("form", FORMS)
def test_every_packet_form_parses_on_the_balancer(form):
    wav = first_frame_wav(REPO / "data" / "us_male_8k.wav")
    messages = encode(form, "acct_1", wav)
    if form == "binary":
        assert messages[1] == wav
        assert parse_header(messages[0]) == Header("acct_1")
    else:
        assert len(messages) == 1
        packet = parse_text_message(messages[0])
        assert isinstance(packet, Packet)
        assert (packet.account, packet.wav) == ("acct_1", wav)


def first_frame_wav(path: Path) -> bytes:
    info = sf.info(str(path))
    samples, rate = sf.read(str(path), dtype="int16", frames=info.samplerate // 10)
    return encode_wav(samples, rate)


def test_the_table_has_a_row_per_account_and_totals_by_nearest_rank():
    a = AccountStats("acct_a", "d/a", frames_expected=4, frames_sent=4, replies=4, voiced=1,
                     latencies_ms=[10.0, 20.0, 30.0, 40.0])
    a.workers.update({7001: 4})
    b = AccountStats("acct_b", "d/b", frames_expected=2, frames_sent=2, replies=1, errors=1,
                     latencies_ms=[100.0])
    rows = [line.split() for line in format_table([a, b]).splitlines() if not line.startswith("-")]
    assert rows == [
        ["account", "frames", "replies", "errors", "voice", "workers", "p50", "ms", "p99", "ms"],
        ["acct_a", "4", "4", "0", "25%", "7001", "20.0", "40.0"],
        ["acct_b", "2", "1", "1", "-", "-", "100.0", "100.0"],  # its one reply was an error
        ["TOTAL", "6", "5", "1", "30.0", "100.0"],  # p50 of 10, 20, 30, 40, 100
    ]
    assert b.summary()["missing"] == 1 and a.summary()["latency_ms"] == {"p50": 20.0, "p90": 40.0, "p99": 40.0,
                                                                        "max": 40.0}


@pytest.fixture(scope="module")
def chunk_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every data/ sample split into 100 ms frames (in a temp dir, not data/)."""
    root = tmp_path_factory.mktemp("chunks")
    return [split_wav(wav, chunk_dir_for(wav, root)).out_dir for wav in DATA_WAVS]


def check_all_answered(stats: AccountStats, frames: int, system: System) -> None:
    assert stats.error_messages == []
    assert (stats.frames_sent, stats.replies, stats.errors, stats.missing) == (frames, frames, 0, 0)
    assert len(stats.latencies_ms) == frames
    assert len(stats.workers) == 1  # an account stays on its worker
    assert sum(stats.workers.values()) == frames
    assert len(system.account_log(stats.account)) == frames


@pytest.mark.integration
def test_replay_streams_every_sample_concurrently_and_each_frame_is_answered(system, chunk_dirs):
    targets = targets_from_dirs(chunk_dirs, [f"replay_{d.name}" for d in chunk_dirs])

    stats = asyncio.run(replay(targets, ReplayOptions(url=system.ws_url, interval_ms=0)))

    assert [s.account for s in stats] == [t.account for t in targets]
    for target, s in zip(targets, stats, strict=True):
        check_all_answered(s, len(target.frames), system)
        # Speech separated by one-second pauses: the VAD finds both.
        assert 0 < s.voiced < s.replies, s.account


@pytest.mark.integration
@pytest.mark.parametrize("form", ["json", "literal"])
def test_replay_in_the_other_packet_forms(system, chunk_dirs, form):
    frames = load_frames(chunk_dirs[0])[:20]
    target = Target(f"replay_form_{form}", frames)

    [stats] = asyncio.run(replay([target], ReplayOptions(url=system.ws_url, form=form, interval_ms=0, repeat=2)))

    check_all_answered(stats, 40, system)


def test_replay_reports_frames_without_replies_when_nothing_listens(tmp_path, chunk_dirs):
    url = f"ws://127.0.0.1:{free_port()}/ws"
    done = run_tool("replay", str(chunk_dirs[0]), "--url", url, "--pace", "fast",
                      "--json-out", str(tmp_path / "out.json"))
    assert done.returncode == 1
    frames = len(load_frames(chunk_dirs[0]))
    account = account_for(chunk_dirs[0])
    assert f"{account}: connection failed: ClientConnectorError" in done.stderr
    assert f"{account}: {frames} of {frames} frames got no reply" in done.stderr
    written = json.loads((tmp_path / "out.json").read_text())
    assert (written["url"], written["form"], written["interval_ms"]) == (url, "binary", 0.0)
    [stats] = written["accounts"]
    assert (stats["account"], stats["frames_sent"], stats["replies"], stats["missing"]) == (account, 0, 0, frames)
    assert stats["latency_ms"] == {"p50": None, "p90": None, "p99": None, "max": None}


@pytest.fixture(scope="module")
def system_with_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    sys_ = make_system(tmp_path_factory.mktemp("token_system"), n_workers=1,
                       worker_args=["--encoder", "none"], balancer_args=["--token", "s3cret"])
    try:
        yield sys_.start()
    finally:
        sys_.stop()


@pytest.mark.integration
def test_replay_sends_the_bearer_token(system_with_token, chunk_dirs):
    frames = load_frames(chunk_dirs[0])[:5]
    url = system_with_token.ws_url

    [ok] = asyncio.run(replay([Target("replay_token_ok", frames)],
                              ReplayOptions(url=url, token="s3cret", interval_ms=0)))
    [refused] = asyncio.run(replay([Target("replay_token_bad", frames)],
                                   ReplayOptions(url=url, token="wrong", interval_ms=0)))

    check_all_answered(ok, 5, system_with_token)
    assert (refused.frames_sent, refused.replies, refused.missing) == (0, 0, 5)
    [message] = refused.error_messages
    assert message.startswith("connection refused by server: HTTP 401 (missing or wrong token")
