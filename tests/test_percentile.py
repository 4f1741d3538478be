"""voicetools.percentile: the project's one percentile, nearest rank."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicetools.percentile import percentile, percentiles


def test_nothing_to_rank_is_none():
    assert percentile([], 50) is None
    assert percentile([np.nan, np.nan], 50) is None
    assert percentiles([], (50, 99)) == {"p50": None, "p99": None}


def test_nearest_rank_of_1_to_100_is_the_rank_itself():
    values = list(range(1, 101))
    assert [percentile(values, q) for q in (0, 1, 50, 99, 100)] == [1, 1, 50, 99, 100]


def test_a_percentile_is_a_measured_value_not_an_interpolation():
    # numpy's linear default would say 2.5 and 3.97 here: latencies no frame had.
    values = [4.0, 1.0, 3.0, 2.0]
    assert [percentile(values, q) for q in (25, 50, 75, 76, 99)] == [1.0, 2.0, 3.0, 4.0, 4.0]
    assert percentile([5.0], 99) == 5.0


def test_nan_is_ignored_and_results_are_rounded_by_name():
    assert percentiles(np.array([1.0, 2.0, 3.0, 4.0, np.nan]), (50, 99.9)) == {"p50": 2.0, "p99.9": 4.0}
    assert percentiles([1.234567], (50,)) == {"p50": 1.23}


def test_the_rank_is_exact_where_float_arithmetic_is_not():
    # 2.2 * 1500 / 100 is 33.00000000000001 in floats: still rank 33.
    assert percentile(range(1, 1501), 2.2) == 33


def test_q_outside_0_to_100_is_refused():
    with pytest.raises(ValueError, match="within 0..100"):
        percentile([1.0], 101)


@given(values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200),
       q=st.integers(0, 100) | st.sampled_from([0.1, 12.5, 99.9, 99.99]))
def test_the_smallest_value_that_at_least_q_percent_are_within(values, q):
    """The definition: p is a value of the list, at least q % of the values
    are <= p, and fewer than q % are below it (so no smaller value qualifies)."""
    p = percentile(values, q)
    need = Fraction(str(q)) * len(values) / 100
    assert p in values
    assert sum(v <= p for v in values) >= need
    assert sum(v < p for v in values) < need or p == min(values)
