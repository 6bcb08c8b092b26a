"""The http analyzer: every TCP connection in `sock_data` (and the TLS tracer's plaintext in `tls_data`,
when present) through the protocol parsers, into one result of exchanges, WebSocket sessions and TLS
connections, with per-endpoint statistics.

As an analyzer (see analyze/analyzer.py): `run(db, params) -> HttpResult` and `register_views(db)`, which
exposes the exchanges to SQL as table `http_exchanges` (plus `http_websocket_frames`, `http_tls`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from uetrace.analyze import heap
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.http.filters import filter_result
from uetrace.analyze.http.reconstruct import analyze_http
from uetrace.analyze.http.result import HttpParams, HttpResult
from uetrace.analyze.http.sql_tables import store_tables

NAME = "http"
VIEWS: tuple[str, ...] = ("http_exchanges", "http_websocket_frames", "http_tls")


def applies(cap: ArchiveDb) -> bool:
    return cap.has("sock_data") or cap.has("tls_data")


def run(cap: ArchiveDb, params: HttpParams | None = None) -> HttpResult:
    """The http section: every exchange of the capture, filtered by params, with the comm of the
    processes at both ends. The unfiltered analysis is kept in `cap.cache`, so that register_views
    and several runs with different filters parse the payloads once."""
    return filter_result(_full_result(cap), params or HttpParams())


def register_views(cap: ArchiveDb) -> None:
    store_tables(cap.con, _full_result(cap))


def _full_result(cap: ArchiveDb) -> HttpResult:
    cached = cap.cache.get(NAME)
    if cached is None:
        cached = cap.cache[NAME] = analyze_http(cap.con, enums=cap.enums)
        _add_comms(cap, cached)
        heap.release()  # the parse's garbage, before the next step allocates its own
    return cached


def _add_comms(cap: ArchiveDb, result: HttpResult) -> None:
    """comm of client and server pids (see ArchiveDb.process_names)."""
    if not result.exchanges:
        return
    comms = cap.process_names()
    x = result.exchanges
    for side in ("client", "server"):
        pids, inverse = np.unique(x.ints(f"{side}_pid"), return_inverse=True)
        labels = [comms.get(p) or "" for p in pids.tolist()] + [""]  # the last: no pid
        codes = np.where(x.valid(f"{side}_pid"), inverse.reshape(-1), len(pids)).astype(np.int32)
        x = x.with_column(f"{side}_comm", pa.DictionaryArray.from_arrays(codes, pa.array(labels, pa.string())))
    result.exchanges = x


class HttpAnalyzer:
    name, views = NAME, VIEWS

    def applies(self, db: ArchiveDb) -> bool:
        return applies(db)

    def report_params(self, top: int) -> HttpParams:
        """`trace analyze --top N`: N rows in the slowest-requests table."""
        return replace(HttpParams(), slowest=top)

    def run(self, db: ArchiveDb, params: HttpParams) -> HttpResult:
        return run(db, params)

    def render(self, result: HttpResult) -> str:
        return result.to_text()

    def to_json(self, result: HttpResult) -> dict[str, Any]:
        return result.to_json()

    def register_views(self, db: ArchiveDb) -> None:
        register_views(db)


ANALYZER = HttpAnalyzer()
