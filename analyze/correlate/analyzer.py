"""The correlation analyzer: every exchange of the http analysis, per side a span with its window and
evidence, linked into traces (see spans.py). The result is computed once per archive and kept in
`db.cache`: `trace requests`, `trace request`, `trace flamegraph --request` and the exports share it.
"""

from __future__ import annotations

import json
from dataclasses import replace

from uetrace.analyze import http
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.correlate import evidence as ev_mod
from uetrace.analyze.correlate.result import CLIENT, CorrelateParams, CorrelationResult, Request, Span
from uetrace.analyze.correlate.spans import IdMaker, TraceParent, link, parse_traceparent
from uetrace.analyze.correlate.windows import side_windows, split_addr
from uetrace.analyze.http.exchange import Exchange
from uetrace.analyze.http.result import endpoint_of

NAME = "correlation"
VIEWS: tuple[str, ...] = ()
_CACHE = "correlate"


def applies(db: ArchiveDb) -> bool:
    return http.applies(db)


def archive_key(db: ArchiveDb) -> str:
    """The archive's identity for generated ids: its clock anchors and host (a new capture, a new key)."""
    m = db.manifest
    return json.dumps([m.get("clock"), m.get("host"), m.get("command_line")], sort_keys=True, default=str)


def exchange_order(exchanges: list[Exchange]) -> list[Exchange]:
    """Time order (the order of request ids): first timestamp, then connection and stream."""
    return sorted(exchanges, key=lambda e: (e.start_ts if e.start_ts is not None else (e.end_ts or 0),
                                            e.conn_id, e.stream_id or 0))


def correlate(db: ArchiveDb) -> CorrelationResult:
    """The full correlation of an archive (cached)."""
    cached = db.cache.get(_CACHE)
    if cached is not None:
        return cached
    exchanges = exchange_order(http.run(db, http.HttpParams()).exchanges)
    ids = IdMaker(archive_key(db))
    requests = []
    names: dict[tuple, str] = {}
    for i, e in enumerate(exchanges):
        key = (e.protocol, e.method, e.path, e.grpc_service, e.grpc_method)
        name = names.get(key) or names.setdefault(key, endpoint_of(e))
        requests.append(Request(i, e, name))
    first_on_conn: set[int] = set()
    seen_conns: set[int] = set()
    for r in requests:
        if r.exchange.conn_id not in seen_conns:
            seen_conns.add(r.exchange.conn_id)
            first_on_conn.add(r.request_id)
    headers: dict[int, TraceParent] = {}
    windows = side_windows(db, exchanges)
    probes = [ev_mod.Probe(sw.window, split_addr(requests[sw.index].exchange.client),
                           split_addr(requests[sw.index].exchange.server), sw.index in first_on_conn)
              for sw in windows]
    notes: list[str] = []
    for sw, evidence in zip(windows, ev_mod.gather(db, probes, notes)):
        r = requests[sw.index]
        e = r.exchange
        span = Span(ids.span_id(r.request_id, int(sw.side != CLIENT)), "", r.request_id, sw.side, sw.window,
                    evidence=evidence)
        if sw.side == CLIENT:
            r.client = span
        else:
            r.server = span
        tp = parse_traceparent(sw.head) if sw.head else None
        if tp is None and e.traceparent:  # decoded by the h2 parser (HPACK hides it from a byte search)
            tp = parse_traceparent(b"traceparent: " + e.traceparent.encode("latin-1"))
        if tp is not None and (sw.side == CLIENT or r.request_id not in headers):
            headers[r.request_id] = tp
    placed = bool(windows)
    del windows, probes  # their Windows live on in the spans; the rest would only add to the peak
    link(requests, headers, ids)
    result = CorrelationResult(CorrelateParams(), requests, ev_mod.sampling_period_ns(db),
                               ev_mod.recorded_sources(db), notes)
    if not placed and exchanges:
        result.notes.append("no exchange could be placed on a thread (no socket syscalls in their windows)")
    db.cache[_CACHE] = result
    return result


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
