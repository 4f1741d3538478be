"""The one percentile definition of the project: nearest rank.

The p-th percentile of n values is the smallest value such that at least p %
of the values are at most it: the value at rank ceil(p / 100 * n) of the
sorted values. Chosen over interpolation (numpy's default "linear") because

- it is always a latency that was measured: "p99 42 ms" means a frame took
  42 ms, and 99 % of frames took at most that;
- it is how latency objectives are stated and checked ("99 % of frames
  answered within 100 ms"): p99 <= bound holds exactly when at least 99 % of
  the values are within the bound, which interpolation does not guarantee.

The replay, faults, calibrate, encoder_times and bench tools all use it; a
median is percentile(values, 50) (the lower middle value for an even count).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


def percentile(values: Iterable[float] | np.ndarray, q: float) -> float | None:
    """Nearest-rank q-th percentile (0 <= q <= 100) of values, NaN ignored;
    None when there is no value. q = 0 is the smallest value, 100 the largest."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q:g}")
    array = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return None
    # Rounded before ceil: 2.2 % of 1500 values is rank 33, although
    # 2.2 * 1500 / 100 is 33.00000000000001 in floats.
    rank = min(max(1, math.ceil(round(q * array.size / 100, 9))), array.size)
    return float(np.partition(array, rank - 1)[rank - 1])


def percentiles(values: Iterable[float] | np.ndarray, qs: Sequence[float] = (50, 95, 99),
                digits: int = 2) -> dict[str, float | None]:
    """{"p50": ..., "p95": ...} of values (NaN ignored), rounded to digits."""
    array = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
    out: dict[str, float | None] = {}
    for q in qs:
        value = percentile(array, q)
        out[f"p{q:g}"] = None if value is None else round(value, digits)
    return out
