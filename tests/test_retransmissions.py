"""The network evidence's retransmissions (analyze/correlate/evidence.py:retransmissions), decided in
numpy, against the SQL window that flows.py counts them with, run by DuckDB over the same packets:
several connections, directions and interfaces, sequence numbers that wrap past 2**32, equal times."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from uetrace.analyze.retransmissions import retransmissions

# flows.py's definition, per packet: a segment starting below the highest sequence number already sent
# in its direction, in (ts, seq) order, sequence numbers relative to the direction's first segment.
_SQL = """
    WITH rel AS (
        SELECT *, ((seq - first_value(seq) OVER d) % 4294967296 + 4294967296) % 4294967296 AS rel_seq
        FROM packets WINDOW d AS (PARTITION BY code, ifindex, fwd ORDER BY ts, seq))
    SELECT i, coalesce(seg_len > 0 AND rel_seq < max(rel_seq + seg_len) OVER (
               PARTITION BY code, ifindex, fwd ORDER BY ts, seq
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false)::BIGINT AS retx
    FROM rel ORDER BY i"""


def _packets(rng: np.random.Generator, n: int, interfaces: int) -> dict[str, np.ndarray]:
    code = rng.integers(0, 5, n)
    fwd = rng.integers(0, 2, n)
    ifindex = rng.integers(1, 1 + interfaces, n) * 7  # sparse interface numbers
    ts = np.sort(rng.integers(0, n // 3 + 1, n))  # many equal times
    # Each direction sends forward from a random start near the wrap, now and then going back.
    start = rng.integers(2**32 - 5000, 2**32, 64)
    step = rng.integers(-300, 1000, n)
    seq = (start[(code * 2 + fwd) % 64] + np.cumsum(step)) % 2**32
    seg_len = np.where(rng.random(n) < 0.2, 0, rng.integers(1, 1500, n))
    return {"code": code, "ifindex": ifindex, "fwd": fwd, "ts": ts, "seq": seq, "seg_len": seg_len}


@pytest.mark.parametrize("seed, n, interfaces", [(1, 50, 1), (2, 2000, 1), (3, 2000, 3), (4, 20000, 2)])
def test_retransmissions_match_the_sql_window(seed, n, interfaces):
    p = _packets(np.random.default_rng(seed), n, interfaces)
    # The rows in no particular order: what DuckDB returns from a join.
    shuffle = np.random.default_rng(seed + 100).permutation(n)
    p = {k: v[shuffle].astype(np.int64) for k, v in p.items()}
    got = retransmissions(p["code"], p["ifindex"], p["fwd"], p["ts"], p["seq"], p["seg_len"])
    con = duckdb.connect()
    con.register("packets", pa.table({"i": np.arange(n), **p}))
    want = np.array([r[1] for r in con.execute(_SQL).fetchall()])
    # Rows equal in (ts, seq) within a direction may be taken in either order; only their count is defined.
    same = {}
    for k, (c, f, i, t, s) in enumerate(zip(p["code"], p["fwd"], p["ifindex"], p["ts"], p["seq"])):
        same.setdefault((c, f, i, t, s), []).append(k)
    for rows in same.values():
        assert got[rows].sum() == want[rows].sum()
    assert 0 < got.sum() < n  # both kinds occur


def test_no_packets():
    empty = np.zeros(0, np.int64)
    assert retransmissions(empty, empty, empty, empty, empty, empty).size == 0
