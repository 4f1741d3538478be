"""The speaker decoder (worker/speakers/decoder.py over hmm.py) on synthetic
score sequences: it switches after a real change, holds through a noisy
frame, says unknown for a stranger, and gives every voiced frame exactly one
final label, in order, never before its lag."""
from __future__ import annotations

import numpy as np
import pytest

from worker.speakers.decoder import UNKNOWN, Final, Observation, SpeakerDecoder
from worker.speakers.encoders import SCORE_MODELS
from worker.speakers.hmm import ScoreModel, TurnModel, backward, predict, update
from worker.speakers.tracker import SURE, TURNS, is_sure, new_decoder

NAMES = ("alice", "bob")
MODEL = SCORE_MODELS["ge2e"]  # threshold 0.685 at 1 s
TARGET, OTHER = 0.75, 0.58    # a speaker's 1 s window against its own voiceprint and another's


def decoder(lag: float = 0.9, shift: float = 0.5, model: ScoreModel = MODEL, turns: TurnModel = TURNS
            ) -> SpeakerDecoder[int]:
    return SpeakerDecoder(NAMES, model, turns, lag, shift)


def scores(speaker: str | None, noise: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """A window of speaker (None: a stranger, everyone at OTHER)."""
    s = np.array([TARGET if name == speaker else OTHER for name in NAMES])
    return s + (rng.normal(0, noise, len(s)) if rng is not None else 0.0)


def run(dec: SpeakerDecoder[int], who: list[str | None], every: int = 2, noise: float = 0.0
        ) -> tuple[list[str | None], dict[int, Final[int]], dict[int, int]]:
    """who: per 100 ms frame the speaker (None: a stranger, "" silence). A
    window of the last second every `every` voiced frames. The immediate
    labels, the finals by frame and the frame at which each came."""
    rng = np.random.default_rng(0)
    immediate: list[str | None] = []
    finals: dict[int, Final[int]] = {}
    came: dict[int, int] = {}
    voiced = 0
    for t, speaker in enumerate(who):
        voice = int(speaker != "")
        window = None
        if voice:
            voiced += 1
            if voiced >= 3 and (voiced - 3) % every == 0:
                # The window's last second: mostly the current speaker, the
                # previous one while it still fills the window.
                past = [s for s in who[max(0, t - 9):t + 1] if s != ""]
                mix = np.mean([scores(s or None) for s in past], axis=0)
                window = Observation(mix + (rng.normal(0, noise, len(NAMES)) if noise else 0.0),
                                     min(1.0, len(past) / 10))
        label, done = dec.add(t, 0.1, voice, window)
        immediate.append(label.speaker if label else None)
        for f in done:
            assert f.ref not in finals, f"frame {f.ref} got two final labels"
            finals[f.ref], came[f.ref] = f, t
    for f in dec.flush():
        assert f.ref not in finals
        finals[f.ref], came[f.ref] = f, len(who)
    return immediate, finals, came


def test_hmm_steps_are_probabilities():
    p = update(np.array([0.5, 0.25, 0.25]), np.array([2.0, 0.0, -1.0]))
    assert p.sum() == pytest.approx(1.0) and p[0] > 0.5
    assert predict(np.array([1.0, 0.0, 0.0]), 0.3) == pytest.approx([0.8, 0.1, 0.1])
    # Backward with no evidence is flat: smoothing then equals filtering.
    assert np.allclose(backward(np.full(3, 1 / 3), np.ones(3), 0.3), 1 / 3)
    # Evidence at the next frame for state 0 raises state 0 most, the others through the mix.
    beta = backward(np.full(3, 1 / 3), np.array([1.0, 0.1, 0.1]), 0.3)
    assert beta.sum() == pytest.approx(1.0) and beta[0] > beta[1] == pytest.approx(beta[2])


def test_the_score_model_weighs_short_windows_less_at_a_lower_threshold():
    assert MODEL.tau(1.0) == pytest.approx(MODEL.threshold)
    assert MODEL.tau(0.3) < MODEL.tau(0.5) < MODEL.tau(1.0)
    assert 0 < MODEL.weight(0.3) < MODEL.weight(0.5) < MODEL.weight(1.0) == 1.0
    own = MODEL.with_threshold(0.7)
    assert own.tau(1.0) == 0.7 and own.beta == MODEL.beta


def test_it_switches_after_a_real_change_and_the_final_label_at_the_change():
    who = ["alice"] * 40 + ["bob"] * 40
    immediate, finals, _ = run(decoder(), who)
    assert set(immediate[10:40]) == {"alice"} and set(immediate[60:]) == {"bob"}
    switched = immediate.index("bob", 40)
    # Without a pause, within a second: the window must first hold more bob than alice.
    assert 40 < switched <= 50
    final = [finals[t].label.speaker for t in range(len(who))]
    assert final[:38] == ["alice"] * 38 and final[43:] == ["bob"] * 37
    assert final.index("bob") in range(39, 43)  # the final label changes at the change, +-0.1 s


def test_it_holds_through_a_noisy_window():
    dec = decoder()
    labels = []
    for t in range(60):
        window = None
        if t >= 2 and t % 2 == 0:
            s = scores("alice")
            if t == 30:
                s = np.array([0.62, 0.72])  # one window that looks more like bob
            window = Observation(s, 1.0)
        label, _ = dec.add(t, 0.1, 1, window)
        labels.append(label.speaker if label else None)
    assert set(labels[2:]) == {"alice"}


def test_a_stranger_is_unknown_immediately_and_finally():
    who: list[str | None] = [None] * 50
    immediate, finals, _ = run(decoder(), who)
    assert set(immediate[2:]) == {UNKNOWN}
    assert {f.label.speaker for f in finals.values()} == {UNKNOWN}
    # ... also in a conversation: alice, then a stranger, then bob.
    who = ["alice"] * 30 + [""] * 5 + [None] * 30 + [""] * 5 + ["bob"] * 30
    _, finals, _ = run(decoder(), who)
    stranger = [finals[t].label.speaker for t in range(38, 65)]
    assert stranger.count(UNKNOWN) >= len(stranger) - 1


def test_noisy_windows_of_one_speaker_stay_one_speaker():
    immediate, finals, _ = run(decoder(), ["bob"] * 200, noise=0.04)
    assert immediate[20:].count("bob") >= 0.95 * 180
    assert [f.label.speaker for f in finals.values()][20:].count("bob") >= 0.98 * 180


@pytest.mark.parametrize("lag", [0.0, 0.3, 0.9])
def test_every_voiced_frame_gets_one_final_label_in_order_never_before_its_lag(lag):
    who = (["alice"] * 25 + [""] * 4 + ["bob"] * 17 + [""] * 2 + ["bob"] * 10 + [""] * 12 + ["alice"] * 7)
    _, finals, came = run(decoder(lag=lag, shift=min(0.5, lag)), who)
    voiced = [t for t, s in enumerate(who) if s != ""]
    assert sorted(finals) == voiced and list(finals) == voiced  # each once, oldest first
    frames = round(lag * 10)
    for t in voiced:
        assert came[t] >= min(t + frames, len(who) - 1) or came[t] == len(who), (t, came[t])
        assert came[t] <= t + frames or came[t] == len(who)  # and no later than the lag (flush at the end)
    # Frames right before a silence end their run (known once a silent frame
    # came: with some lag); the first after it follows a gap.
    assert finals[24].ends_run == (lag > 0) and finals[29].after_gap and not finals[30].after_gap


def test_a_lag_of_zero_makes_final_labels_the_immediate_ones():
    who = ["alice"] * 30 + ["bob"] * 30
    immediate, finals, _ = run(decoder(lag=0.0, shift=0.0), who)
    assert [finals[t].label.speaker for t in range(2, 60)] == immediate[2:]


def test_nothing_is_named_before_a_first_window():
    label, finals = decoder().add(0, 0.1, 1, None)
    assert label is None and finals == []


def test_a_decision_stays_sure_until_a_window_says_otherwise():
    # What spaces the windows out (windows.SURE_STEP_SECONDS): the posterior
    # as the latest window left it, not as it drifts toward uniform after.
    dec = new_decoder(NAMES, MODEL, 1.0)
    assert not is_sure(dec)  # no window yet
    for t in range(12):  # alice, a 1 s window every other frame
        dec.add(t, 0.1, 1, Observation(scores("alice"), 1.0) if t % 2 == 0 else None)
    assert is_sure(dec)
    for t in range(12, 20):  # no window: the posterior drifts ...
        dec.add(t, 0.1, 1)
    assert dec.alpha is not None and float(dec.alpha.max()) < SURE
    assert is_sure(dec)  # ... but no window said otherwise
    dec.add(20, 0.1, 1, Observation(scores("bob"), 1.0))  # another voice
    assert not is_sure(dec)
