"""The first bytes of many places in one buffer, as rows of a numpy array."""

from __future__ import annotations

import numpy as np


def byte_windows(data: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """uint8 [len(starts), width]: the `width` bytes of `data` (uint8) from each start, zeros past its
    end. One copy per row from a sliding view: an element-wise gather costs ~2.5 ns a byte."""
    out = np.zeros((len(starts), width), dtype=np.uint8)
    cut = len(data) - width
    body = starts <= cut
    if cut >= 0:
        out[body] = np.lib.stride_tricks.sliding_window_view(data, width)[starts[body]]
    if not body.all():   # the last few starts: from a zero-padded copy of the data's end
        lo = max(cut, 0)
        end = np.zeros(len(data) - lo + width, dtype=np.uint8)
        end[:len(data) - lo] = data[lo:]
        out[~body] = np.lib.stride_tricks.sliding_window_view(end, width)[starts[~body] - lo]
    return out
