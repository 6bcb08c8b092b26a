"""The correlation analyzer: every exchange of the http analysis, per side a span with its window and
evidence, linked into traces (see spans.py). The result is computed once per archive and kept in
`db.cache`: `trace requests`, `trace request`, `trace flamegraph --request` and the exports share it.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from uetrace.analyze import flows, heap, http
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.correlate import evidence as ev_mod
from uetrace.analyze.correlate.result import CorrelateParams, CorrelationResult
from uetrace.analyze.correlate.span_table import SpanTable
from uetrace.analyze.correlate.spans import IdMaker, TraceParent, link_table, parse_traceparent
from uetrace.analyze.correlate.windows import SideWindows, side_windows, split_addr
from uetrace.analyze.distinct import distinct_rows
from uetrace.analyze.http.exchange_table import ExchangeTable
from uetrace.analyze.http.result import endpoint_codes

NAME = "correlation"
VIEWS: tuple[str, ...] = ()
_CACHE = "correlate"


def applies(db: ArchiveDb) -> bool:
    return http.applies(db)


def archive_key(db: ArchiveDb) -> str:
    """The archive's identity for generated ids: its clock anchors and host (a new capture, a new key)."""
    m = db.manifest
    return json.dumps([m.get("clock"), m.get("host"), m.get("command_line")], sort_keys=True, default=str)


def exchange_order(x: ExchangeTable) -> np.ndarray:
    """Time order (the order of request ids): first timestamp, then connection and stream; the rows
    of x in that order."""
    when = np.where(x.valid("start_ts"), x.ints("start_ts"), x.ints("end_ts"))
    return np.lexsort((x.ints("stream_id"), x.ints("conn_id"), when)).astype(np.int64)


def correlate(db: ArchiveDb) -> CorrelationResult:
    """The full correlation of an archive (cached)."""
    cached = db.cache.get(_CACHE)
    if cached is not None:
        return cached
    x = http.run(db, http.HttpParams()).exchanges
    order = exchange_order(x)
    names, codes = endpoint_codes(x)  # as the http section names them
    ids = IdMaker(archive_key(db))
    notes: list[str] = []
    if "net" in ev_mod.recorded_sources(db):
        # The flows table the network evidence reads is built first, while little else is held: it
        # is DuckDB's biggest query (windows over every packet), and its memory peaks by itself.
        flows.register_views(db)
        heap.release()
    sw = side_windows(db, x, order)
    heap.release()
    table = SpanTable(sw.index, sw.side, sw.pid, sw.tid, sw.start, sw.end, sw.exact)
    table.evidence = ev_mod.gather(db, _probes(x, order, sw), notes)
    table.period_ns, table.alloc_rate = ev_mod.sampling_period_ns(db), ev_mod.alloc_rate(db)
    table.span = ids.span_ids(sw.index, sw.side)
    table.headers = _headers(x, order, sw)
    del sw
    heap.release()
    link_table(table, ids)
    result = CorrelationResult(CorrelateParams(), x, order, names, codes[order], table, ids,
                               ev_mod.sampling_period_ns(db), ev_mod.recorded_sources(db), notes)
    if not len(table) and len(x):
        result.notes.append("no exchange could be placed on a thread (no socket syscalls in their windows)")
    db.cache[_CACHE] = result
    return result


def _probes(x: ExchangeTable, order: np.ndarray, sw: SideWindows) -> ev_mod.Probes:
    """The windows with their connections, and whether each is its connection's first request."""
    (clients, ccode), (servers, scode) = x.strings("client"), x.strings("server")
    pairs, inverse = distinct_rows([ccode, scode], [len(clients) + 1, len(servers) + 1])
    conns: list[tuple[str, int, str, int]] = []
    code = np.full(len(pairs), -1, np.int32)
    for k, (c, s) in enumerate(pairs.tolist()):
        a = split_addr(clients[c]) if c >= 0 else None
        b = split_addr(servers[s]) if s >= 0 else None
        if a is not None and b is not None:
            code[k] = len(conns)
            conns.append((*a, *b))
    conn = code[inverse.reshape(-1)[order[sw.index]]]
    _, first = np.unique(x.ints("conn_id")[order], return_index=True)  # each connection's first request
    first_on = np.zeros(len(order), bool)
    first_on[first] = True
    return ev_mod.Probes(sw.pid, sw.tid, sw.start, sw.end, conn, conns, first_on[sw.index])


def _headers(x: ExchangeTable, order: np.ndarray, sw: SideWindows) -> dict[int, TraceParent]:
    """request id -> the traceparent its request carried, as each side saw it (its header bytes, else
    the one the h2 parser decoded: HPACK hides it from a byte search); the client side's wins."""
    values, codes = x.strings("traceparent")
    decoded = [parse_traceparent(b"traceparent: " + v.encode("latin-1")) if v else None for v in values] + [None]
    by_request: dict[int, TraceParent] = {}
    if any(decoded):
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        for row in np.flatnonzero(np.array([d is not None for d in decoded])[codes]).tolist():
            by_request[int(rank[row])] = decoded[codes[row]]  # type: ignore[assignment]
    rows = set(sw.heads)
    if by_request:
        rows.update(np.flatnonzero(np.isin(sw.index, np.fromiter(by_request, np.int64))).tolist())
    out: dict[int, TraceParent] = {}
    for row in sorted(rows):
        rid = int(sw.index[row])
        tp = parse_traceparent(sw.heads[row]) if row in sw.heads else None
        tp = tp or by_request.get(rid)
        if tp is not None and (sw.side[row] == 0 or rid not in out):
            out[rid] = tp
    return out


def run(db: ArchiveDb, params: CorrelateParams | None = None) -> CorrelationResult:
    full = correlate(db)
    return replace(full, params=params or CorrelateParams())


class CorrelationAnalyzer:
    name, views = NAME, VIEWS

    def applies(self, db: ArchiveDb) -> bool:
        return applies(db)

    def report_params(self, top: int) -> CorrelateParams:
        return CorrelateParams(slowest=top)

    def run(self, db: ArchiveDb, params: CorrelateParams) -> CorrelationResult:
        return run(db, params)

    def render(self, result: CorrelationResult) -> str:
        return result.to_text()

    def to_json(self, result: CorrelationResult) -> dict:
        return result.to_json()

    def register_views(self, db: ArchiveDb) -> None:
        return None


ANALYZER = CorrelationAnalyzer()
