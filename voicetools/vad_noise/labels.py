"""Reference labels from the clean recording's energy, per 100 ms frame.

There are no annotations, and labels from any of the detectors compared (or a
vote of them) would favour that detector. The reference is an energy
labelling of the clean speech, fixed before any detector was run:

  1. 10 ms segments; level = 10 log10(mean square).
  2. The file's noise floor is the 5th percentile of the levels, its speech
     peak the 99th. A segment is active when its level is at least a third of
     the way from floor to peak (in dB): 16 dB over the floor of en_example
     (range 48 dB), 7 dB over sample3's (its own background is 22 dB under its
     peaks). Relative, so it follows each recording's gain and background; a
     recording spanning less than 10 dB has no active segment.
  3. Gaps shorter than 200 ms between active runs are bridged: stop closures
     and short within-phrase pauses are part of speech; 200 ms is the usual
     lower bound of a perceived pause (Campione & Veronis 2002).
  4. Active runs shorter than 50 ms left after that are dropped (clicks).

A 100 ms frame is speech when active segments cover at least half of it.
Scoring excludes the frames that touch a reference transition: a collar of
one frame (100 ms) either side of each change of label, so the frames f-1 and
f around a change between f-1 and f are not scored. The detectors differ in
where exactly they put an edge; the collar scores what is between edges.
"""
from __future__ import annotations

import numpy as np

SEGMENT_S = 0.01
FRAME_S = 0.1
FLOOR_PERCENTILE = 5
PEAK_PERCENTILE = 99
LEVEL_SHARE = 1 / 3
BRIDGE_S = 0.2
MIN_RUN_S = 0.05
FRAME_SPEECH_SHARE = 0.5
COLLAR_FRAMES = 1
# A recording whose levels span less than this (steady noise, a tone,
# silence) has no speech an energy labelling can find: 10 ms levels of white
# noise alone vary by a few dB, speech over its pauses by 20-50 here.
MIN_RANGE_DB = 10.0

SEGMENTS_PER_FRAME = round(FRAME_S / SEGMENT_S)


def runs(mask: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, end, value) of each run of equal values."""
    if len(mask) == 0:
        return []
    edges = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [len(mask)]))
    return [(int(s), int(e), bool(mask[s])) for s, e in zip(starts, ends, strict=True)]


def levels_db(samples: np.ndarray, rate: int) -> np.ndarray:
    n = round(rate * SEGMENT_S)
    k = len(samples) // n
    squares = np.square(samples[:k * n].reshape(k, n), dtype=np.float64)
    return 10 * np.log10(squares.mean(axis=1) + 1e-12)


def active_segments(samples: np.ndarray, rate: int) -> np.ndarray:
    """One bool per whole 10 ms segment: speech by steps 1-4 above."""
    level = levels_db(samples, rate)
    if len(level) == 0:
        return np.zeros(0, bool)
    floor, peak = np.percentile(level, [FLOOR_PERCENTILE, PEAK_PERCENTILE])
    active = level >= floor + LEVEL_SHARE * (peak - floor)
    if peak - floor < MIN_RANGE_DB:
        active[:] = False
    bridge, shortest = round(BRIDGE_S / SEGMENT_S), round(MIN_RUN_S / SEGMENT_S)
    for start, end, value in runs(active):
        if not value and 0 < start and end < len(active) and end - start < bridge:
            active[start:end] = True
    for start, end, value in runs(active):
        if value and end - start < shortest:
            active[start:end] = False
    return active


def sample_mask(active: np.ndarray, rate: int, length: int) -> np.ndarray:
    """The segment labels spread over `length` samples at `rate` (the tail
    after the last whole segment is inactive)."""
    n = round(rate * SEGMENT_S)
    mask = np.zeros(length, bool)
    covered = min(len(active) * n, length)
    mask[:covered] = np.repeat(active, n)[:covered]
    return mask


def frame_labels(active: np.ndarray) -> np.ndarray:
    """One int per whole 100 ms frame: 1 when active segments cover at least
    FRAME_SPEECH_SHARE of it."""
    k = len(active) // SEGMENTS_PER_FRAME
    share = active[:k * SEGMENTS_PER_FRAME].reshape(k, SEGMENTS_PER_FRAME).mean(axis=1)
    return (share >= FRAME_SPEECH_SHARE).astype(np.int8)


def scored_frames(labels: np.ndarray, collar: int = COLLAR_FRAMES) -> np.ndarray:
    """False for frames within `collar` frames of a change of label: a change
    between frames f-1 and f excludes f-collar .. f+collar-1."""
    scored = np.ones(len(labels), bool)
    for f in np.flatnonzero(np.diff(labels)) + 1:
        scored[max(0, f - collar):f + collar] = False
    return scored


def onsets(labels: np.ndarray) -> list[tuple[int, int]]:
    """(first, end) frames of each reference speech run that starts after
    non-speech (a file that opens with speech has no onset to time)."""
    return [(s, e) for s, e, v in runs(labels.astype(bool)) if v and s > 0]
