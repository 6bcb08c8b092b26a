"""distinct_rows gives exactly what numpy's row-wise unique gives, packed or not."""

from __future__ import annotations

import numpy as np
import pytest

from uetrace.analyze.distinct import distinct_rows


@pytest.mark.parametrize("n", [0, 1, 5000])
@pytest.mark.parametrize("sizes", [[3, 5, 50, 2, 4], [2**40, 2**30]])  # the second does not pack
def test_distinct_rows_equal_numpy_unique(n, sizes):
    rng = np.random.default_rng(n)
    codes = [rng.integers(-1, min(size, 7) - 1, n) for size in sizes]
    keys, inverse = distinct_rows(codes, sizes)
    want_keys, want_inverse = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
    assert keys.tolist() == want_keys.tolist()
    assert inverse.tolist() == want_inverse.reshape(-1).tolist()
