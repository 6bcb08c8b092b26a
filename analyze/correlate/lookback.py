"""Where a far client's window can begin: the last request write on its socket begun before the server
had the request, found by one ASOF join instead of reading every row of the lookback.

windows.py looks up to FAR_CLIENT_LOOKBACK_NS back for that write. Reading all rows of that span for
every exchange measured at the server costs (exchanges x rows per 10 s of the connection): on a busy
keep-alive connection whose client lost records, gigabytes. Only rows from that write on can change a
window (see narrowed_lo), so the rows are read from there.

windows.py reads each chunk's rows from RECENT_NS before its requests and finds most of these writes
there; the join is for the rest. It too reads only the writes of the last RECENT_NS first (row groups
outside are skipped), then looks a request still without one up over its whole lookback.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

# How far before a chunk's first request the join looks for each request's latest write.
RECENT_NS = 1_000_000_000

_NORM = "CASE WHEN starts_with({c}, '::ffff:') AND contains({c}, '.') THEN substr({c}, 8) ELSE {c} END"
_KEYS = "d.lport = q.lport AND d.rport = q.rport AND d.laddr = q.laddr AND d.raddr = q.raddr AND d.tls = q.tls"
_WRITES = f"""SELECT ts_enter, ts_exit, lport, rport, {_NORM.format(c='laddr')} AS laddr,
    {_NORM.format(c='raddr')} AS raddr, tls FROM ({{source}})
    WHERE protocol = 6 AND bytes > 0 AND direction = {{egress}} AND {{within}}"""
# The write with the greatest ts_enter <= start: the latest begun before the server had the request.
_ASOF_SQL = f"SELECT q.q, d.ts_enter, d.ts_exit FROM _corr_far q ASOF JOIN ({_WRITES}) d ON {_KEYS} " \
            "AND d.ts_enter <= q.start"
# Exactly what windows.py's rows give (ts_exit within the lookback): for the rare query whose latest
# write is not recent, or returned before the lookback began (an older write may still have returned
# within it).
_RANGE_SQL = f"SELECT q.q, max(d.ts_enter) FROM _corr_far q JOIN ({_WRITES}) d ON {_KEYS} " \
             "AND d.ts_enter <= q.start AND d.ts_exit >= q.lo GROUP BY q.q"


def narrowed_lo(con: duckdb.DuckDBPyConnection, source: str, egress: int, cols: dict[str, np.ndarray],
                far: np.ndarray) -> np.ndarray:
    """cols["lo"] with each far client's (mask `far`) lower bound raised to when its latest request
    write begun at or before its start began (the window's `fc_start`), or to its start when there is
    none.

    The same windows come out: windows.py takes the far client's start as the greatest ts_enter of a
    request write at or before start, its end and thread from response reads returned at or after
    that, and its head from the write begun at exactly that time; every row those use returned at
    or after that write began (a syscall returns after it begins; rows that say otherwise are not a
    capture's). Without such a write the window is dropped whatever the rows."""
    lo = np.asarray(cols["lo"], dtype=np.int64).copy()
    idx = np.flatnonzero(far)
    if not idx.size:
        return lo
    start = np.asarray(cols["start"], dtype=np.int64)[idx]
    table = pa.table({"q": pa.array(idx, pa.int64()), "tls": pa.array([cols["tls"][i] for i in idx], pa.bool_()),
                      "laddr": pa.array([cols["laddr"][i] for i in idx], pa.string()),
                      "lport": pa.array([cols["lport"][i] for i in idx], pa.int32()),
                      "raddr": pa.array([cols["raddr"][i] for i in idx], pa.string()),
                      "rport": pa.array([cols["rport"][i] for i in idx], pa.int32()),
                      "start": pa.array(start, pa.int64()), "lo": pa.array(lo[idx], pa.int64())})
    found = dict.fromkeys(idx.tolist(), None)  # q -> fc_start, None: no such write
    recent = f"ts_enter BETWEEN {int(start.min()) - RECENT_NS} AND {int(start.max())}"
    con.register("_corr_far", table)
    try:
        redo = set(found)
        for q, ts_enter, ts_exit in con.execute(_ASOF_SQL.format(source=source, egress=egress,
                                                                 within=recent)).fetchall():
            if ts_exit is not None and ts_exit >= lo[q]:
                found[q] = ts_enter
                redo.discard(q)
        if redo:
            again = np.isin(idx, list(redo))
            within = f"ts_exit >= {int(lo[idx[again]].min())} AND ts_enter <= {int(start[again].max())}"
            con.unregister("_corr_far")
            con.register("_corr_far", table.filter(pa.array(again)))
            for q, ts_enter in con.execute(_RANGE_SQL.format(source=source, egress=egress,
                                                             within=within)).fetchall():
                found[q] = ts_enter
    finally:
        con.unregister("_corr_far")
    for q, fc_start in found.items():
        lo[q] = max(int(lo[q]), int(fc_start)) if fc_start is not None else int(cols["start"][q])
    return lo
