"""scripts/calibrate.py: the EER arithmetic, and a real run on the speaker set."""
from __future__ import annotations

import re

import numpy as np
import pytest

import calibrate
from worker.speakers.encoders import DEFAULT_THRESHOLDS


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


def test_calibration_run_prints_a_table_and_writes_the_threshold(speakers_dir, tmp_path, capsys):
    dotenv = tmp_path / ".env"
    dotenv.write_text("AUTH_TOKEN=keep-me\nSPEAKER_THRESHOLD=0.1\n")
    assert calibrate.main([str(speakers_dir), "--encoders", "ge2e", "--windows", "2",
                           "--write-config", str(dotenv)]) == 0
    out = capsys.readouterr().out
    # Window rows: full 2 s windows, every window a worker embeds, whole files.
    for row in (r"ge2e +2 s +134/402", r"ge2e +live 2 s +150/450", r"ge2e +whole +16/48"):
        assert re.search(rf"^{row}\s.*%", out, re.MULTILINE), (row, out)
    values = dotenv.read_text().splitlines()
    assert values[0] == "AUTH_TOKEN=keep-me" and "SPEAKER_ENCODER=ge2e" in values
    [threshold] = [float(v.split("=")[1]) for v in values if v.startswith("SPEAKER_THRESHOLD=")]
    # The worker's built-in default came from this same run.
    assert threshold == pytest.approx(DEFAULT_THRESHOLDS["ge2e"], abs=0.01)
