"""timeline.py's binary-search sums against brute force on random points, intervals and windows."""

from __future__ import annotations

import random

import numpy as np

from uetrace.analyze.correlate import timeline


def _windows(rnd: random.Random, n: int, keys: int):
    wk = np.array([rnd.randrange(keys + 1) for _ in range(n)], np.int64)  # key `keys` has no data
    ws = np.array([rnd.randrange(0, 1000) for _ in range(n)], np.int64)
    we = ws + np.array([rnd.randrange(0, 300) for _ in range(n)], np.int64)
    return wk, ws, we


def test_points_in_matches_brute_force():
    rnd = random.Random(7)
    for _ in range(200):
        m = rnd.randrange(0, 60)
        keys = np.array([rnd.randrange(3) for _ in range(m)], np.int64)
        ts = np.array([rnd.randrange(0, 1200) for _ in range(m)], np.int64)
        val = np.array([rnd.randrange(1, 100) for _ in range(m)], np.int64)
        wk, ws, we = _windows(rnd, rnd.randrange(1, 30), 3)
        counts, (sums,) = timeline.points_in(keys, ts, [val], wk, ws, we)
        for i in range(len(wk)):
            inside = [j for j in range(m) if keys[j] == wk[i] and ws[i] <= ts[j] <= we[i]]
            assert counts[i] == len(inside) and sums[i] == sum(int(val[j]) for j in inside)


def _disjoint(rnd: random.Random, key: int) -> list[tuple[int, int, int]]:
    out, t = [], rnd.randrange(0, 50)
    while t < 1200:
        a = t
        b = a + rnd.randrange(0, 80)
        out.append((key, a, b))
        t = b + rnd.randrange(1, 80)
    return out


def test_overlap_and_union_match_brute_force():
    rnd = random.Random(11)
    for _ in range(200):
        ivs = [iv for k in range(3) for iv in _disjoint(rnd, k) if rnd.random() < 0.6]
        rnd.shuffle(ivs)
        keys, a, b = (np.array([iv[i] for iv in ivs], np.int64) for i in range(3))
        wk, ws, we = _windows(rnd, rnd.randrange(1, 30), 3)
        counts, total = timeline.overlap(keys, a, b, wk, ws, we)
        for i in range(len(wk)):
            hits = [(x, y) for k, x, y in ivs if k == wk[i] and x < we[i] and y > ws[i]]
            assert total[i] == sum(min(y, we[i]) - max(x, ws[i]) for x, y in hits)
            # an interval touching the window at one instant overlaps it by nothing
            assert counts[i] >= len(hits)
        # Nested and overlapping intervals (locks held inside locks): their union, then the same sums.
        nested = [(k, x, x + rnd.randrange(0, 200)) for k, x, _ in ivs for _ in range(rnd.randrange(1, 3))]
        if not nested:
            continue
        keys, a, b = (np.array([iv[i] for iv in nested], np.int64) for i in range(3))
        _, held = timeline.overlap(*timeline.union(keys, a, b), wk, ws, we)
        for i in range(len(wk)):
            covered = {t for k, x, y in nested if k == wk[i] for t in range(max(x, ws[i]), min(y, we[i]))}
            assert held[i] == len(covered)
