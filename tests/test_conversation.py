"""voicetools.conversation (voicestream-conversation): conversations of
enrolled speakers and a stranger, their RTTM, and their identification error
rate from pyannote.metrics.

The in-process tests build conversations from the project's own espeak-ng
voices (data/, data/enroll/) and score hand-made segments. The integration
test runs one short fold end to end on ../shared/data/speakers through a
real GE2E system and checks the structure and sanity of what it produced,
not its accuracy (the speaker decisions are the system's, and change).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pyannote.database.util import load_rttm

from voicetools.conversation import ConversationError, scoring
from voicetools.conversation import build as conv
from voicetools.conversation import run as cli
from voicetools.conversation.build import BuildOptions
from voicetools.conversation.system import worker_args
from voicetools.paths import REPO
from voicetools.timeline import Segment

DATA = REPO / "data"
VOICES = ("gb_male", "sc_female", "us_female")  # the 16 kHz espeak-ng voices
QUICK = BuildOptions(enroll_files=1, turns_each=2, turn_seconds=(3.0, 4.0), pause_seconds=(0.5, 1.0), seed=7)


@pytest.fixture(scope="module")
def vad() -> conv.VadEngine:
    return conv.vad_engine()


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A speaker folder from data/: each voice's enrollment sample (1.wav) and its 16 kHz sample (2.wav)."""
    root = tmp_path_factory.mktemp("voices")
    for name in VOICES:
        (root / name).mkdir()
        (root / name / "1.wav").write_bytes((DATA / "enroll" / f"{name}.wav").read_bytes())
        (root / name / "2.wav").write_bytes((DATA / f"{name}_16k.wav").read_bytes())
    return root


@pytest.fixture(scope="module")
def built(voices: Path, vad: conv.VadEngine) -> conv.Conversation:
    return conv.build("sc_female", conv.speaker_files(voices), QUICK, vad, fold=1)


def test_the_stranger_is_not_enrolled_and_enrollment_files_are_never_streamed(built: conv.Conversation, voices: Path):
    assert built.enrolled == {n: [voices / n / "1.wav"] for n in ("gb_male", "us_female")}
    assert {t.source for t in built.turns} == {str(voices / n / "2.wav") for n in VOICES}
    assert {t.label for t in built.turns if t.speaker == "sc_female"} == {conv.UNKNOWN}
    assert all(t.label == t.speaker for t in built.turns if t.speaker != "sc_female")


def test_turns_alternate_with_pauses_and_hold_the_source_audio(built: conv.Conversation):
    names = [t.speaker for t in built.turns]
    assert sorted(names) == sorted(VOICES * QUICK.turns_each)
    assert all(a != b for a, b in zip(names, names[1:], strict=False))
    first = built.turns[0]
    assert first.start == pytest.approx(QUICK.pause_seconds[0])
    for before, after in zip(built.turns, built.turns[1:], strict=False):
        assert QUICK.pause_seconds[0] <= after.start - before.end <= QUICK.pause_seconds[1] + 1 / conv.RATE
    for turn in built.turns:
        assert QUICK.turn_seconds[0] <= turn.end - turn.start <= QUICK.turn_seconds[1] + 1 / conv.RATE
        source, _ = sf.read(turn.source, dtype="int16")
        at, length = round(turn.source_start * conv.RATE), round((turn.end - turn.start) * conv.RATE)
        start = round(turn.start * conv.RATE)
        assert np.array_equal(built.samples[start:start + length], source[at:at + length])
    # A speaker's second turn continues where the first stopped.
    gb = [t for t in built.turns if t.speaker == "gb_male"]
    assert gb[1].source_start == pytest.approx(gb[0].source_start + gb[0].end - gb[0].start)
    assert len(built.samples) % int(conv.FRAME_SECONDS * conv.RATE) == 0
    assert built.seconds >= built.turns[-1].end + QUICK.pause_seconds[0]
    # Pauses are quiet noise, not digital silence.
    pause = built.samples[int(first.end * conv.RATE) + 10:int(built.turns[1].start * conv.RATE) - 10]
    assert 0 < np.sqrt(np.mean(pause.astype(float) ** 2)) < 100


def test_reference_speech_lies_inside_its_turns_and_turns_mode_labels_whole_turns(built: conv.Conversation):
    speech = built.reference("speech")
    turns = built.reference("turns")
    assert [(s.speaker, s.start, s.end) for s in turns] == [(t.label, t.start, t.end) for t in built.turns]
    assert 0.5 * sum(s.seconds for s in turns) < sum(s.seconds for s in speech) <= sum(s.seconds for s in turns)
    for turn in built.turns:
        assert turn.speech, f"silero heard no speech in {turn}"
        assert all(turn.start <= a < b <= turn.end + 1e-9 for a, b in turn.speech)
    assert [s.start for s in speech] == sorted(s.start for s in speech)


def test_same_seed_same_conversation_other_fold_another(voices: Path, vad: conv.VadEngine, built: conv.Conversation):
    speakers = conv.speaker_files(voices)
    again = conv.build("sc_female", speakers, QUICK, vad, fold=1)
    assert np.array_equal(again.samples, built.samples) and again.turns == built.turns
    other = conv.build("sc_female", speakers, QUICK, vad, fold=2)
    assert [t.start for t in other.turns] != [t.start for t in built.turns]


def test_rttm_round_trips_through_pyannote(built: conv.Conversation, tmp_path: Path):
    path = tmp_path / "ref.rttm"
    path.write_text(conv.rttm(built.uri, built.reference()))
    (annotation,) = load_rttm(path).values()
    got = sorted((round(s.start, 3), round(s.end, 3), label) for s, _, label in annotation.itertracks(yield_label=True))
    want = sorted((round(s.start, 3), round(s.start, 3) + round(s.seconds, 3), s.speaker) for s in built.reference())
    assert [(a, pytest.approx(b, abs=2e-3), c) for a, b, c in want] == got
    assert set(annotation.labels()) == {"gb_male", "us_female", conv.UNKNOWN}


def test_score_and_who_for_whom_on_hand_made_segments():
    reference = [Segment("alice", 0, 2), Segment(conv.UNKNOWN, 3, 5)]
    hypothesis = [Segment("alice", 0.5, 1), Segment("bob", 1, 2), Segment("alice", 3, 4), Segment(conv.UNKNOWN, 5, 6)]
    s = scoring.score("u", reference, hypothesis, seconds=6, collar=0)
    assert (s.speech, s.confusion, s.missed, s.false_alarm, s.correct) == pytest.approx((4, 2, 1.5, 1, 0.5))
    assert s.ier == pytest.approx(4.5 / 4)
    assert scoring.who_for_whom(reference, hypothesis) == {
        "alice": {"(none)": 0.5, "alice": 0.5, "bob": 1.0}, conv.UNKNOWN: {"(none)": 1.0, "alice": 1.0}}
    assert scoring.stranger_named(scoring.who_for_whom(reference, hypothesis)) == (1.0, 2.0)
    assert scoring.breakdown(scoring.who_for_whom(reference, hypothesis)) == {
        "enrolled_right": 0.5, "enrolled_other": 1.0, "enrolled_unknown": 0.0, "enrolled_none": 0.5,
        "stranger_unknown": 0.0, "stranger_named": 1.0, "stranger_none": 1.0}
    # Wrong names in a turn's first 2 s and after (no decision is not a wrong name).
    turn = conv.Turn("alice", "alice", "a.wav", 0.0, 0.0, 5.0, ((0.0, 3.0), (4.0, 5.0)))
    got = scoring.phases([turn], [Segment("bob", 0, 2.5), Segment("alice", 2.5, 3), Segment(conv.UNKNOWN, 4, 4.5)])
    assert got.as_dict() == {"head_wrong": 2.0, "head": 2.0, "rest_wrong": 1.0, "rest": 2.0}
    # The collar forgives a quarter second either side of every reference boundary.
    late = scoring.score("u", [Segment("alice", 0, 2)], [Segment("alice", 0.2, 2)], seconds=2, collar=0.25)
    assert late.ier == 0 and late.speech == pytest.approx(1.5)  # 2 s less 0.25 s either side of 0 and 2
    assert scoring.total([s, late]).speech == pytest.approx(5.5)


def test_turn_latency_and_first_label_on_hand_made_segments():
    turns = [conv.Turn("alice", "alice", "a.wav", 0, 0.5, 3.0, ((0.52, 3.0),)),
             conv.Turn("bob", "bob", "b.wav", 0, 4.0, 6.0, ((4.03, 6.0),)),
             conv.Turn("bob", "bob", "b.wav", 0, 6.5, 7.0, ((6.5, 7.0),)),  # the same speaker again: no change
             conv.Turn("carol", conv.UNKNOWN, "c.wav", 0, 7.5, 9.0, ((7.5, 9.0),))]
    hypothesis = [Segment("alice", 0.8, 3.0), Segment("alice", 4.0, 4.3), Segment("bob", 4.3, 7.0),
                  Segment("alice", 7.5, 9.0)]
    # bob's label exists at the end of frame 4.3-4.4, 0.37 s after his turn began;
    # the stranger is never called unknown in their turn.
    assert scoring.turn_latencies(turns, hypothesis, 9.0) == [pytest.approx(0.37), float("inf")]
    # The first label: frame 0.8-0.9, 0.38 s after the first speech.
    assert scoring.first_label(turns, hypothesis, 9.0) == pytest.approx(0.38)
    assert scoring.first_label(turns, [], 9.0) == float("inf")
    assert scoring.labels_per_frame([Segment("bob", 0.2, 0.4)], 0.5) == [None, None, "bob", "bob", None]


def test_a_recorded_conversation_enrolls_from_where_only_one_speaks(tmp_path: Path):
    rttm = tmp_path / "r.rttm"
    rttm.write_text("SPEAKER x 1 0.000 2.000 <NA> <NA> ann <NA> <NA>\n"
                    "SPEAKER x 1 1.500 2.000 <NA> <NA> ben <NA> <NA>\n"
                    "SPEAKER x 1 4.000 1.000 <NA> <NA> ann <NA> <NA>\n")
    turns = conv.rttm_turns(rttm)
    assert conv.solo_spans(turns, "ann") == [(0.0, 1.5), (4.0, 5.0)]
    assert conv.solo_spans(turns, "ben") == [(2.0, 3.5)]
    samples = (np.sin(np.arange(6 * 16000) / 5) * 8000).astype(np.int16)
    wav = tmp_path / "x.wav"
    sf.write(wav, samples, 16000, subtype="PCM_16")
    recorded = conv.recorded(wav, rttm, tmp_path / "enroll")
    assert [t.label for t in recorded.turns] == ["ann", "ben", "ann"] and recorded.stranger == ""
    assert [len(sf.read(p[0])[0]) for p in recorded.enrolled.values()] == [int(2.5 * 16000), int(1.5 * 16000)]
    assert [(s.start, s.end) for s in recorded.reference()] == [(0.0, 2.0), (1.5, 3.5), (4.0, 5.0)]
    bad = tmp_path / "bad.rttm"
    bad.write_text("SPEAKER x 1 zero 2.0 <NA> <NA> ann <NA> <NA>\n")
    with pytest.raises(ConversationError, match="not an RTTM SPEAKER line"):
        conv.rttm_turns(bad)


def test_bad_input_is_named(voices: Path, vad: conv.VadEngine, tmp_path: Path):
    speakers = conv.speaker_files(voices)
    with pytest.raises(ConversationError, match="no speaker 'carol'"):
        conv.build("carol", speakers, QUICK, vad)
    with pytest.raises(ConversationError, match="--enroll-files 2 leaves none to stream"):
        conv.build("gb_male", speakers, BuildOptions(enroll_files=2), vad)
    lonely = tmp_path / "lonely"
    (lonely / "us_male").mkdir(parents=True)
    (lonely / "us_male" / "1.wav").write_bytes((DATA / "us_male_8k.wav").read_bytes())
    with pytest.raises(ConversationError, match="1 speaker folder"):
        conv.speaker_files(lonely)
    with pytest.raises(ConversationError, match=r"us_male_8k.wav|1.wav: 8000 Hz with 1 channel\(s\)"):
        conv.read_audio(lonely / "us_male" / "1.wav")
    with pytest.raises(ConversationError, match="speaker folder not found"):
        conv.speaker_files(tmp_path / "nowhere")
    with pytest.raises(SystemExit):
        cli.parse_args(["--encoders", "ge2e,xvector"])
    assert cli.main([str(voices), "--strangers", "carol"]) == 2
    # ECAPA's source reaches the workers; GE2E needs none.
    assert worker_args("ecapa", tmp_path, "/models/ecapa")[-2:] == ["--ecapa-source", "/models/ecapa"]
    assert "--ecapa-source" not in worker_args("ge2e", tmp_path, "/models/ecapa")
    # An encoder the workers cannot load is a row of its own; the others are still measured.
    assert "ecapa    unavailable" in cli.table([cli.EncoderRun("ecapa", unavailable="no model")])
    assert cli.EncoderRun("ecapa", unavailable="no model").as_dict() == {"unavailable": "no model"}


@pytest.mark.integration
def test_one_fold_end_to_end_through_a_real_ge2e_system(speakers_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    argv = [str(speakers_dir), "--encoders", "ge2e", "--strangers", "speaker_1", "--enroll-files", "1",
            "--turns-each", "1", "--turn-seconds", "3,4", "--out-dir", str(out), "--json-out", str(tmp_path / "r.json"),
            "--no-recorded"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    for row in ("ge2e     speaker_1 imm", "ge2e     speaker_1 fin", "ge2e     all immediate", "ge2e     all final",
                "collar ±0.25 s", "final labels 1000 ms after their frame"):
        assert row in printed, (row, printed)

    result = json.loads((tmp_path / "r.json").read_text())
    (fold,) = result["folds"]
    assert (fold["encoder"], fold["stranger"], fold["turns"], result["collar"]) == ("ge2e", "speaker_1", 4, 0.25)
    enrolled = {"speaker_2", "speaker_3", "speaker_4"}

    # The reference is the conversation as built (the same seed builds it again here).
    options = BuildOptions(enroll_files=1, turns_each=1, turn_seconds=(3.0, 4.0))
    built = conv.build("speaker_1", conv.speaker_files(speakers_dir), options, conv.vad_engine(), fold=0)
    assert fold["seconds"] == pytest.approx(built.seconds, abs=1e-3)
    reference = load_rttm(fold["reference_rttm"])["ge2e-speaker_1"]
    assert reference.get_timeline().duration() == pytest.approx(sum(s.seconds for s in built.reference()), abs=0.01)
    assert set(reference.labels()) == enrolled | {conv.UNKNOWN}

    for kind in ("immediate", "final"):
        labels = fold[kind]
        hypothesis = load_rttm(labels["hypothesis_rttm"])["ge2e-speaker_1"]
        assert set(hypothesis.labels()) == set(labels["labels"]) and set(labels["labels"]) <= enrolled | {conv.UNKNOWN}
        assert labels["labels"], f"the system named no one ({kind}) in a conversation of three enrolled speakers"
        spans = [s for s, _ in hypothesis.itertracks()]
        assert all(0 <= s.start < s.end <= built.seconds + 1e-6 for s in spans)
        assert all(a.end <= b.start + 1e-6 for a, b in zip(spans, spans[1:], strict=False))
        # pyannote's parts add up: the errors make the rate, and what is not
        # missed or confused is correct.
        parts = labels["confusion"] + labels["missed"] + labels["false_alarm"]
        assert labels["ier"] == pytest.approx(parts / labels["speech"])
        assert labels["correct"] + labels["confusion"] + labels["missed"] == pytest.approx(labels["speech"])
        assert 0 < labels["speech"] <= reference.get_timeline().duration()
        overall = result["encoders"]["ge2e"][kind]
        assert overall["ier"] == pytest.approx(labels["ier"])
        # Who was taken for whom covers the reference speech, unscored collars included.
        assert math.isclose(labels["stranger_seconds"], sum(labels["who_for_whom"][conv.UNKNOWN].values()),
                            abs_tol=0.01)
        assert sum(labels["breakdown"].values()) == pytest.approx(reference.get_timeline().duration(), abs=0.01)
        phases = labels["turn_phases"]
        assert phases["head"] + phases["rest"] == pytest.approx(reference.get_timeline().duration(), abs=0.01)
        assert 0 <= phases["head_wrong"] <= phases["head"] and 0 <= phases["rest_wrong"] <= phases["rest"]
        # Four turns, three changes of speaker: a latency each (inf: never named in the turn).
        assert len(labels["turn_latencies"]) == 3 and all(x > 0 for x in labels["turn_latencies"])
        assert 0 < labels["first_label"] <= 2.0
    assert result["encoders"]["ge2e"]["status"]["state"] == "ready"
