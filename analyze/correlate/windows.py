"""Per exchange and side: the thread that handled it and the time window, from the socket tracer's
syscalls on that side's socket; and the request bytes that side moved (for its headers).

The parsers time an exchange at one end (`measured_at`): start when the first request byte was in hand
there, end when the syscall with the last response byte returned. That end's window is exactly that.
The other end's window comes from its own syscalls on the same connection, bounded by causality: a
server reads the request only after the client began writing it (ts_exit >= client start) and begins
writing the response before the client's last read returns (ts_enter <= client end); on a sequential
HTTP/1 connection that picks exactly this exchange's syscalls. Measured at the server, the client's
request write is the last one to begin before the server had the request, and its response read the
first to return after the server began answering (exact=False when a response took several reads).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.correlate.result import CLIENT, SERVER, Window
from uetrace.analyze.http.exchange import Exchange

# How far before a server's first read a client's request write may have begun (measured at the server).
FAR_CLIENT_LOOKBACK_NS = 10_000_000_000
# Request bytes kept per side to look for headers (a traceparent sits in the header block).
HEAD_BYTES = 8192


@dataclass(slots=True)
class SideWindow:
    index: int  # into the exchanges given
    side: str
    window: Window
    head: bytes  # the first request bytes this side moved in the window (headers), as captured


def split_addr(addr: str) -> tuple[str, int] | None:
    """("1.2.3.4", 80) from "1.2.3.4:80" or "[::1]:80"; None when there is no port."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


_NORM = "CASE WHEN starts_with({c}, '::ffff:') AND contains({c}, '.') THEN substr({c}, 8) ELSE {c} END"

_ROWS_SQL = f"""
    SELECT q.q, d.direction, d.ts_enter, d.ts_exit, d.pid, d.tid, d.payload
    FROM _corr_sides q JOIN sock_data d
      ON d.lport = q.lport AND d.rport = q.rport AND {_NORM.format(c='d.laddr')} = q.laddr
         AND {_NORM.format(c='d.raddr')} = q.raddr
    WHERE d.protocol = 6 AND d.bytes > 0 AND d.ts_exit >= q.lo AND d.ts_enter <= q.hi
    ORDER BY q.q, d.ts_enter, d.ts_exit"""


def side_windows(db: ArchiveDb, exchanges: list[Exchange]) -> list[SideWindow]:
    """The windows of every exchange's captured ends (an end is captured when the parsers named its
    pid), in exchange order, client side first."""
    wanted: list[tuple[int, str, bool]] = []  # (exchange index, side, measured there)
    cols: dict[str, list] = {c: [] for c in ("q", "laddr", "lport", "raddr", "rport", "lo", "hi")}
    for i, e in enumerate(exchanges):
        start = e.start_ts if e.start_ts is not None else e.end_ts
        end = e.end_ts if e.end_ts is not None else e.start_ts
        client, server = split_addr(e.client), split_addr(e.server)
        if start is None or end is None or client is None or server is None:
            continue
        for side, pid in ((CLIENT, e.client_pid), (SERVER, e.server_pid)):
            if pid is None:
                continue
            measured = e.measured_at == side
            local, remote = (client, server) if side == CLIENT else (server, client)
            lo = start - FAR_CLIENT_LOOKBACK_NS if side == CLIENT and not measured else start
            cols["q"].append(len(wanted))
            cols["laddr"].append(local[0])
            cols["lport"].append(local[1])
            cols["raddr"].append(remote[0])
            cols["rport"].append(remote[1])
            cols["lo"].append(max(lo, 0))
            cols["hi"].append(end)
            wanted.append((i, side, measured))
    if not wanted:
        return []
    rows = _rows(db, cols)
    egress = int(db.enums.value("sock_data", "ue_sock_direction", "DIR_EGRESS"))
    out = []
    for q, (i, side, measured) in enumerate(wanted):
        e = exchanges[i]
        w = _window(e, side, measured, rows.get(q), egress)
        if w is not None:
            out.append(SideWindow(i, side, w[0], w[1]))
    return out


def _rows(db: ArchiveDb, cols: dict[str, list]) -> dict[int, dict[str, np.ndarray | list]]:
    if not db.has("sock_data"):
        return {}
    table = pa.table({"q": pa.array(cols["q"], pa.int64()), "laddr": pa.array(cols["laddr"], pa.string()),
                      "lport": pa.array(cols["lport"], pa.int32()), "raddr": pa.array(cols["raddr"], pa.string()),
                      "rport": pa.array(cols["rport"], pa.int32()), "lo": pa.array(cols["lo"], pa.int64()),
                      "hi": pa.array(cols["hi"], pa.int64())})
    db.con.register("_corr_sides", table)
    try:
        got = db.con.sql(_ROWS_SQL).to_arrow_table()
    except duckdb.Error:
        return {}
    finally:
        db.con.unregister("_corr_sides")
    if got.num_rows == 0:
        return {}
    q = got.column("q").to_numpy()
    cuts = np.flatnonzero(np.diff(q)) + 1
    bounds = np.concatenate(([0], cuts, [len(q)]))
    arrays = {c: got.column(c).to_numpy() for c in ("direction", "ts_enter", "ts_exit", "pid", "tid")}
    payload = got.column("payload").to_pylist()
    out: dict[int, dict] = {}
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        out[int(q[a])] = {**{c: v[a:b] for c, v in arrays.items()}, "payload": payload[a:b]}
    return out


def _window(e: Exchange, side: str, measured: bool, rows: dict | None,
            egress: int) -> tuple[Window, bytes] | None:
    start = e.start_ts if e.start_ts is not None else e.end_ts
    end = e.end_ts if e.end_ts is not None else e.start_ts
    assert start is not None and end is not None
    pid = e.client_pid if side == CLIENT else e.server_pid
    tid = e.client_tid if side == CLIENT else e.server_tid
    if rows is None:  # nothing of this end in the window: its times and thread stand in
        if measured and pid is not None and tid is not None:
            return Window(pid, tid, start, end), b""
        return None
    is_egress = rows["direction"] == egress
    ts_enter, ts_exit = rows["ts_enter"].astype(np.int64), rows["ts_exit"].astype(np.int64)
    # The request travels client -> server: the client's egress, the server's ingress.
    req = is_egress if side == CLIENT else ~is_egress
    resp = ~req
    exact = True
    if measured:
        w_start, w_end = start, end
        if side == CLIENT:
            in_req = req & (ts_enter >= start) & (ts_enter <= end)
        else:
            in_req = req & (ts_exit >= start) & (ts_exit <= end)
    elif side == SERVER:
        in_req = req & (ts_exit >= start) & (ts_exit <= end)
        in_resp = resp & (ts_enter >= start) & (ts_enter <= end)
        if not in_req.any() or not in_resp.any():
            return None
        w_start, w_end = int(ts_exit[in_req].min()), int(ts_exit[in_resp].max())
    else:
        before = req & (ts_enter <= start)
        after = resp & (ts_exit >= start)
        if not before.any() or not after.any():
            return None
        first = int(ts_enter[before].max())
        in_req = req & (ts_enter == first)
        w_start, w_end = first, int(ts_exit[after].min())
        exact = int(after.sum()) == 1
    # The thread: the one that wrote (server) or read (client) the response's last byte, else the one
    # the parsers named.
    mine = resp & (ts_exit <= w_end) & (ts_exit >= w_start)
    if mine.any():
        last = int(np.flatnonzero(mine)[-1])
        pid, tid = int(rows["pid"][last]), int(rows["tid"][last])
    if pid is None or tid is None:
        return None
    head = b"".join(p or b"" for p, keep in zip(rows["payload"], in_req.tolist()) if keep)[:HEAD_BYTES]
    return Window(pid, tid, w_start, w_end, exact), head
