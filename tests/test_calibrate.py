"""voicetools.calibrate (voicestream-calibrate): the EER arithmetic, the
shares of labelled frames, and one real run on the speaker set (closed set,
leave one speaker out through the tracker, thresholds chosen on the other
folds, /verify)."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

from voicetools import calibrate
from worker.speakers.decoder import Label
from worker.speakers.encoders import SCORE_MODELS


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


def test_shares_count_labelled_frames_only():
    labels = [None, Label("alice", 0.8), Label("unknown", 0.6), Label("alice", 0.7), None]
    assert calibrate.shares(labels, "alice") == calibrate.Shares(enrolled=3, identified=2)
    assert calibrate.shares(labels, "unknown") == calibrate.Shares(stranger=3, unknown=1)
    total = calibrate.shares(labels, "alice") + calibrate.shares(labels, "unknown")
    assert (total.identified_share, total.unknown_share) == (2 / 3, 1 / 3) and total.balance() == 1 / 3


@pytest.fixture(scope="module")
def run(speakers_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    dotenv = tmp_path_factory.mktemp("calibrate") / ".env"
    dotenv.write_text("AUTH_TOKEN=keep-me\nSPEAKER_THRESHOLD=0.1\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert calibrate.main([str(speakers_dir), "--encoders", "ge2e", "--write-config", str(dotenv)]) == 0
    return out.getvalue(), dotenv


def test_closed_set_table_and_the_threshold_written(run):
    out, dotenv = run
    # The tracker's full 1 s windows, all its windows, whole files.
    for row in (r"ge2e +1 s +\d+/\d+", r"ge2e +all windows +\d+/\d+", r"ge2e +whole +16/48"):
        assert re.search(rf"^{row}\s.*%", out, re.MULTILINE), (row, out)
    values = dotenv.read_text().splitlines()
    assert values[0] == "AUTH_TOKEN=keep-me" and "SPEAKER_ENCODER=ge2e" in values
    [threshold] = [float(v.split("=")[1]) for v in values if v.startswith("SPEAKER_THRESHOLD=")]
    # The tracker's built-in threshold (a 1 s window's) came from this same kind of run.
    assert threshold == pytest.approx(SCORE_MODELS["ge2e"].threshold, abs=0.01)


def fraction(text: str) -> tuple[int, int]:
    done, total = text.split("/")
    return int(done), int(total)


FOLD = r"^ +{name} +{thr} +(\d+/\d+) +[\d.]+% +(\d+/\d+) +[\d.]+% +(\d+/\d+) +[\d.]+% +(\d+/\d+) +[\d.]+%$"


def test_leave_one_speaker_out_with_the_workers_tracker_and_verify(run):
    out, _ = run
    first = out.split("\nThe same,")[0]
    threshold = f"{SCORE_MODELS['ge2e'].threshold:.3f}"
    folds = re.findall(FOLD.format(name=r"(speaker_\d)", thr=threshold), first, re.MULTILINE)
    assert [f[0] for f in folds] == ["speaker_1", "speaker_2", "speaker_3", "speaker_4"], out
    [total] = re.findall(FOLD.format(name="all", thr=threshold), first, re.MULTILINE)
    immediate, immediate_unknown, final, final_unknown = map(fraction, total)
    # Every fold's labels add up; immediate and final labels cover the same frames
    # but for the first ones of a recording, labelled only once a window came.
    assert immediate[1] == sum(fraction(f[1])[1] for f in folds)
    assert immediate[1] <= final[1] and immediate_unknown[1] <= final_unknown[1]
    # What the tracker's defaults reach (docs/speakers.md#unknown-speakers).
    assert final[0] >= 0.93 * final[1] and final_unknown[0] >= 0.8 * final_unknown[1]
    assert immediate[0] >= 0.8 * immediate[1] and immediate_unknown[0] >= 0.8 * immediate_unknown[1]
    # Thresholds chosen on the other folds are printed for both kinds of labels.
    assert out.count("\nThe same, each fold at the threshold chosen on the other folds") == 2


def test_verify_rejects_most_stranger_files(run):
    out, _ = run
    [(rejected, named)] = re.findall(r"^ +all +(\d+/\d+) +(\d+/\d+)$", out.split("/verify rejects")[1], re.MULTILINE)
    # /verify's margin rejects most stranger files (21 of 24 measured) at the
    # cost of few held-out files (42 of 48 named measured).
    assert fraction(rejected) >= (20, 24) and fraction(named)[1] == 48 and fraction(named)[0] >= 40
