"""The http analyzer: every TCP connection in `sock_data` (and the TLS tracer's plaintext in `tls_data`,
when present) through the protocol parsers, into one result of exchanges, WebSocket sessions and TLS
connections, with per-endpoint statistics.

As an analyzer (see analyze/analyzer.py): `run(db, params) -> HttpResult` and `register_views(db)`, which
exposes the exchanges to SQL as table `http_exchanges` (plus `http_websocket_frames`, `http_tls`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.http.exchange import Exchange
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
        _add_comms(cap, cached.exchanges)
    return cached


def _add_comms(cap: ArchiveDb, exchanges: list[Exchange]) -> None:
    """comm of client and server pids (see ArchiveDb.process_names)."""
    if not exchanges:
        return
    comms = cap.process_names()
    for e in exchanges:
        if e.client_pid is not None:
            e.client_comm = comms.get(e.client_pid) or ""
        if e.server_pid is not None:
            e.server_comm = comms.get(e.server_pid) or ""


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
