"""analyze/packed_sort.py gives exactly np.lexsort's order: with and without rows equal in time, with
groups and times that do not pack into 63 bits, with negative groups."""

from __future__ import annotations

import numpy as np
import pytest

from uetrace.analyze.packed_sort import order_by


@pytest.mark.parametrize("groups, times, ties", [(1, 10**9, 0), (50, 10**12, 0), (50, 1000, 5), (3, 40, 20)])
def test_order_is_lexsorts(groups, times, ties):
    rng = np.random.default_rng(groups + times)
    n = 20000
    group = rng.integers(0, groups, n)
    t = rng.integers(0, times, n) + 10**15
    tiebreak = rng.integers(0, max(ties, 1), n)
    assert np.array_equal(order_by(group, t, tiebreak), np.lexsort((tiebreak, t, group)))


def test_wide_and_negative_keys_fall_back():
    rng = np.random.default_rng(7)
    t = rng.integers(0, 2**62, 1000)
    for group in (rng.integers(0, 2**40, 1000), rng.integers(-5, 5, 1000)):
        tiebreak = rng.integers(0, 3, 1000)
        assert np.array_equal(order_by(group, t, tiebreak), np.lexsort((tiebreak, t, group)))


def test_empty():
    z = np.zeros(0, np.int64)
    assert order_by(z, z, z).size == 0
