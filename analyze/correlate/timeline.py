"""Sums over time windows, vectorized: per key (a thread, a connection) points or disjoint intervals
sorted once, then every window is two binary searches and a difference of prefix sums.

A range join in SQL (`ON tid = w.tid AND ts BETWEEN w.s AND w.e`) is a hash join on the key and a filter:
on an event loop's thread, which serves every request, it compares every sample with every window
(100 000 x 100 000). Here the cost is O((points + windows) log points)."""

from __future__ import annotations

import numpy as np

from uetrace.analyze.distinct import sorted_unique


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """keys sorted: (distinct keys, start index, end index) of each run."""
    uk, starts = np.unique(keys, return_index=True)
    ends = np.append(starts[1:], len(keys))
    return uk, starts, ends


# Windows looked up per pass: what a pass allocates per window (its key's group, the bounds found) is
# bounded by this, not by the millions of spans of a big capture (~130 MB a call, before).
WINDOWS_PER_PASS = 1 << 18


def _per_key(wkey: np.ndarray, keys: np.ndarray):
    """For each distinct window key present in `keys` (sorted): (window indices, start, end of its run),
    a pass of WINDOWS_PER_PASS windows at a time."""
    uk, starts, ends = _groups(keys)
    for w0 in range(0, len(wkey), WINDOWS_PER_PASS):
        wk, inverse = np.unique(wkey[w0:w0 + WINDOWS_PER_PASS], return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(wk) + 1))
        pos = np.searchsorted(uk, wk)
        for g, k in enumerate(wk.tolist()):
            p = int(pos[g])
            if p < len(uk) and uk[p] == k:
                yield w0 + order[bounds[g]:bounds[g + 1]], int(starts[p]), int(ends[p])


def points_in(keys: np.ndarray, ts: np.ndarray, values: list[np.ndarray], wkey: np.ndarray, ws: np.ndarray,
              we: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """For each window (wkey, [ws, we]): how many points of that key fall inside, and the sum of each
    value column over them."""
    n = len(wkey)
    counts = np.zeros(n, np.int64)
    sums = [np.zeros(n, np.int64) for _ in values]
    if len(keys) == 0 or n == 0:
        return counts, sums
    order = np.lexsort((ts, keys))
    keys, ts = keys[order], ts[order]
    cums = [np.concatenate(([0], np.cumsum(v[order].astype(np.int64)))) for v in values]
    for idx, lo, hi in _per_key(wkey, keys):
        t = ts[lo:hi]
        a = lo + np.searchsorted(t, ws[idx], "left")
        b = lo + np.searchsorted(t, we[idx], "right")
        counts[idx] = b - a
        for s, c in zip(sums, cums):
            s[idx] = c[b] - c[a]
    return counts, sums


def union(keys: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per key, the union of the intervals as disjoint sorted intervals (time holding at least one lock)."""
    if len(keys) == 0:
        return keys, starts, ends
    order = np.lexsort((starts, keys))
    k, a, b = keys[order], starts[order], ends[order]
    out_k, out_a, out_b = [], [], []
    for _, lo, hi in _per_key(sorted_unique(k), k):
        aa, bb = a[lo:hi], b[lo:hi]
        reach = np.maximum.accumulate(bb)
        new = np.ones(len(aa), bool)
        new[1:] = aa[1:] > reach[:-1]
        first = np.flatnonzero(new)
        last = np.append(first[1:], len(aa)) - 1
        out_k.append(k[lo:lo + len(first)])
        out_a.append(aa[first])
        out_b.append(reach[last])
    return np.concatenate(out_k), np.concatenate(out_a), np.concatenate(out_b)


def overlap(keys: np.ndarray, starts: np.ndarray, ends: np.ndarray, wkey: np.ndarray, ws: np.ndarray,
            we: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each window: how many intervals of its key overlap it, and their total time inside it. The
    intervals of one key must be disjoint (a thread is off-CPU, or waits for one lock, once at a time)."""
    n = len(wkey)
    counts = np.zeros(n, np.int64)
    total = np.zeros(n, np.int64)
    if len(keys) == 0 or n == 0:
        return counts, total
    order = np.lexsort((starts, keys))
    keys, a, b = keys[order], starts[order].astype(np.int64), ends[order].astype(np.int64)
    cum = np.concatenate(([0], np.cumsum(b - a)))
    for idx, lo, hi in _per_key(wkey, keys):
        aa, bb = a[lo:hi], b[lo:hi]
        s, e = ws[idx], we[idx]
        i = lo + np.searchsorted(bb, s, "right")  # first interval ending after s
        j = lo + np.searchsorted(aa, e, "left")   # intervals starting before e: < j
        some = j > i
        ii, jj = np.where(some, i, lo), np.where(some, j - 1, lo)
        t = cum[np.where(some, j, lo)] - cum[np.where(some, i, lo)]
        t = t - np.maximum(s - a[ii], 0) - np.maximum(b[jj] - e, 0)
        counts[idx] = np.where(some, j - i, 0)
        total[idx] = np.where(some, np.maximum(t, 0), 0)
    return counts, total
