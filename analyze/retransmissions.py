"""Which TCP segments are retransmissions: a segment that starts below the highest sequence number
already sent in its direction. Flows count them per flow (flows.py), the correlation per request window
(correlate/evidence.py), both from this.

In numpy rather than SQL: two window functions over every packet (the direction's first sequence
number, the running maximum of what was sent before) took DuckDB twice as long as one packed sort here.
"""

from __future__ import annotations

import numpy as np

from uetrace.analyze.packed_sort import order_by


def retransmissions(code: np.ndarray, ifindex: np.ndarray, fwd: np.ndarray, ts: np.ndarray, seq: np.ndarray,
                    seg_len: np.ndarray) -> np.ndarray:
    """1 for each packet that is a retransmission, else 0: a segment (seg_len > 0) that starts below the
    highest sequence number already sent in its direction (code, ifindex, fwd), in (ts, seq) order,
    sequence numbers taken relative to that direction's first segment, modulo 2**32."""
    n = len(ts)
    if not n:
        return np.zeros(0, np.int64)
    group = _dense(code) * 2 + fwd
    if (ifindex != ifindex[0]).any():  # more than one interface (ifindex >= 0)
        group = _dense(group * (int(ifindex.max()) + 1) + ifindex)
    order = order_by(group, ts, seq)
    g, s, ln = group[order], seq[order], seg_len[order]
    first = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
    rel = (s - np.repeat(s[first], np.diff(np.append(first, n)))) % 2**32
    # A running max over all groups at once: each group's values lifted above every earlier group's.
    lift = g * 2**34  # rel + seg_len < 2**33
    reach = np.maximum.accumulate(rel + ln + lift)
    before = np.concatenate(([-1], reach[:-1]))  # the highest sent before each packet (an earlier group's: below)
    out = np.zeros(n, np.int64)
    out[order] = ((ln > 0) & (rel + lift < before)).astype(np.int64)
    return out


def _dense(values: np.ndarray) -> np.ndarray:
    """values (>= 0) as dense codes 0.. in the same order, without sorting them when they are small."""
    if int(values.max()) < 4 * len(values):
        present = np.zeros(int(values.max()) + 1, np.int64)
        present[values] = 1
        return (np.cumsum(present) - 1)[values]
    return np.unique(values, return_inverse=True)[1].reshape(-1).astype(np.int64)
