"""distinct_rows and sorted_unique give exactly what numpy's unique gives."""

from __future__ import annotations

import numpy as np
import pytest

from uetrace.analyze.distinct import distinct_rows, sorted_unique


@pytest.mark.parametrize("n", [0, 1, 5000])
@pytest.mark.parametrize("sizes", [[3, 5, 50, 2, 4], [2**40, 2**30]])  # the second does not pack
def test_distinct_rows_equal_numpy_unique(n, sizes):
    rng = np.random.default_rng(n)
    codes = [rng.integers(-1, min(size, 7) - 1, n) for size in sizes]
    keys, inverse = distinct_rows(codes, sizes)
    want_keys, want_inverse = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
    assert keys.tolist() == want_keys.tolist()
    assert inverse.tolist() == want_inverse.reshape(-1).tolist()


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint64])
@pytest.mark.parametrize("n, high", [(0, 1), (1, 1), (1000, 3), (20000, 10**6)])
def test_sorted_unique_equals_numpy_unique(dtype, n, high):
    values = np.random.default_rng(n).integers(0, min(high, np.iinfo(dtype).max), n).astype(dtype)
    got = sorted_unique(values)
    assert got.dtype == values.dtype
    assert np.array_equal(got, np.unique(values))
