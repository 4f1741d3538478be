"""voicetools.calibrate (voicestream-calibrate): the EER arithmetic, the
choice of a threshold on the other folds, and one real run on the speaker set
(closed set, leave one speaker out, the rejection methods)."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

from voicetools import calibrate
from worker.speakers.encoders import DEFAULT_THRESHOLDS
from worker.speakers.scoring import Enrolled


def test_eer_of_separable_scores_is_zero_with_a_threshold_between():
    rate, threshold = calibrate.eer(np.array([0.8, 0.9, 0.95]), np.array([0.1, 0.3, 0.5]))
    assert rate == 0.0 and 0.5 < threshold <= 0.8


def test_eer_where_the_error_rates_cross():
    # One target below and one non-target above any threshold in (0.5, 0.6]:
    # 1 of 4 false rejects, 1 of 4 false accepts.
    target = np.array([0.5, 0.7, 0.8, 0.9])
    nontarget = np.array([0.1, 0.2, 0.3, 0.6])
    rate, threshold = calibrate.eer(target, nontarget)
    assert rate == pytest.approx(0.25) and 0.5 <= threshold <= 0.7


def scored(best: list[int], score: list[float]) -> calibrate.Scored:
    return np.array(best), np.array(score), np.ones(len(best), bool)


def test_each_fold_is_tested_at_a_threshold_chosen_on_the_other_folds():
    # Folds a and b separate at 0.6; fold c's stranger scores 0.9, which only
    # a threshold chosen with c itself would reject.
    def fold(stranger_score: float) -> calibrate.Scores:
        return calibrate.Scores([(0, scored([0, 0], [0.8, 0.95]), scored([0], [0.9]))],
                                [(scored([1, 1], [stranger_score, 0.3]), scored([1], [stranger_score]))])
    scores = {"a": fold(0.5), "b": fold(0.55), "c": fold(0.9)}
    grid = np.round(np.arange(0.3, 1.0, 0.05), 2)
    outcomes = {o.stranger: o for o in calibrate.chosen_elsewhere(scores, grid)}
    assert outcomes["c"].threshold is not None and outcomes["c"].threshold <= 0.6  # chosen on a and b
    assert outcomes["c"].unknown == 1 and outcomes["c"].rejected_files == 0
    assert outcomes["a"].identified == 2 and outcomes["a"].unknown == 2 and outcomes["a"].rejected_files == 1


def test_margin_and_s_norm_on_known_vectors():
    enrolled = Enrolled(("alice", "bob"), np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    between = np.array([[0.7, 0.69, 0.0]]) / np.linalg.norm([0.7, 0.69, 0.0])
    near_alice = np.array([[0.9, 0.1, 0.42]]) / np.linalg.norm([0.9, 0.1, 0.42])
    _, _, ok = calibrate.with_margin(0.05)(enrolled, np.concatenate((between, near_alice)))
    assert ok.tolist() == [False, True]
    # Cohort voices close to alice make her scores count for less than far ones.
    alice = Enrolled(("alice",), np.array([[1.0, 0, 0]]))
    near = calibrate.snorm(np.array([[0.95, 0.0, 0.31], [0.9, 0.1, 0.42]]), 2)(alice, near_alice)[1]
    far = calibrate.snorm(np.array([[0.0, 1.0, 0.0], [0.0, 0.6, 0.8]]), 2)(alice, near_alice)[1]
    assert near[0] < 0 < far[0]


@pytest.fixture(scope="module")
def run(speakers_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    dotenv = tmp_path_factory.mktemp("calibrate") / ".env"
    dotenv.write_text("AUTH_TOKEN=keep-me\nSPEAKER_THRESHOLD=0.1\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert calibrate.main([str(speakers_dir), "--encoders", "ge2e", "--windows", "2", "--methods",
                               "--write-config", str(dotenv)]) == 0
    return out.getvalue(), dotenv


def test_closed_set_table_and_the_threshold_written(run):
    out, dotenv = run
    # Full 2 s windows (from 2 s of a turn's speech on), every decision a
    # worker makes, whole files.
    for row in (r"ge2e +2 s +\d+/\d+", r"ge2e +live 2 s +\d+/\d+", r"ge2e +whole +16/48"):
        assert re.search(rf"^{row}\s.*%", out, re.MULTILINE), (row, out)
    values = dotenv.read_text().splitlines()
    assert values[0] == "AUTH_TOKEN=keep-me" and "SPEAKER_ENCODER=ge2e" in values
    [threshold] = [float(v.split("=")[1]) for v in values if v.startswith("SPEAKER_THRESHOLD=")]
    # The worker's built-in default came from this same kind of run.
    assert threshold == pytest.approx(DEFAULT_THRESHOLDS["ge2e"], abs=0.01)


def fraction(text: str) -> tuple[int, int]:
    done, total = text.split("/")
    return int(done), int(total)


def test_leave_one_speaker_out_with_the_workers_decisions_and_verify(run):
    out, _ = run
    folds = re.findall(r"^ +(speaker_\d) +0\.700 +(\d+/\d+) .*?(\d+/\d+) .*?(\d+/\d+) +(\d+/\d+)$", out,
                       re.MULTILINE)
    assert [f[0] for f in folds] == ["speaker_1", "speaker_2", "speaker_3", "speaker_4"], out
    [total] = re.findall(r"^ +all +(\d+/\d+) .*?(\d+/\d+) .*?(\d+/\d+) +(\d+/\d+)$", out, re.MULTILINE)
    identified, unknown, rejected, named = map(fraction, total)
    # Every fold's decisions add up; a stranger's every file is streamed and verified.
    assert identified[1] == sum(fraction(f[1])[1] for f in folds) and rejected[1] == 9 + 5 + 5 + 5
    # What the worker's defaults reach (docs/speakers.md#unknown-speakers):
    # most enrolled decisions right, most stranger decisions unknown, and
    # /verify's margin rejects most stranger files (21 of 24 measured) at the
    # cost of few held-out files (42 of 48 named measured).
    assert identified[0] >= 0.94 * identified[1] and unknown[0] >= 0.8 * unknown[1]
    assert rejected[0] >= 20 and named[1] == 48 and named[0] >= 40


def test_rejection_methods_are_measured_leave_one_out(run):
    out, _ = run
    found = re.findall(r"^(.{40}) +\S+ +\d+/\d+ +([\d.]+%) +\d+/\d+ +([\d.]+%)", out, re.MULTILINE)
    rows = {label.strip(): shares for label, *shares in found}
    labels = list(rows)
    assert any(label.startswith("+ margin") for label in labels) and any("S-norm" in label for label in labels)
    assert any("cohort" in label for label in labels), "data/cohort/ WAVs missing"
    longest = rows["cosine, window 4 s, first at 4 s"]
    # A 4 s window and 4 s of speech before the first decision reach the goals.
    assert float(longest[0][:-1]) >= 95 and float(longest[1][:-1]) >= 95
