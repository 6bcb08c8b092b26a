"""HTTP/1.x, HTTP/2 + gRPC, WebSocket and TLS, reconstructed offline from the socket (and TLS) tracers' records.

Layers, bottom up: streams (one direction of one socket as bytes with gaps) -> stream_loading (from the
archive's rows), batches (connections planned, then read a bounded batch at a time) -> connection (both
ends paired, the View a parser reads; gap_fill) -> the parsers
(http1 over http1_messages and http1_framing, http2, websocket, tls) producing exchange.Exchange, with
HTTP/1 framing anomalies (anomalies) -> reconstruct (dispatch per connection) ->
result (model and statistics), filters, report (text), sql_tables (for `trace query`) -> analyzer (the
`http` section of `trace analyze`).
"""

from uetrace.analyze.http.analyzer import ANALYZER, NAME, VIEWS, HttpAnalyzer, applies, register_views, run
from uetrace.analyze.http.exchange import Exchange
from uetrace.analyze.http.filters import filter_result
from uetrace.analyze.http.reconstruct import analyze_http
from uetrace.analyze.http.report import process_label, status_text
from uetrace.analyze.http.result import HttpParams, HttpResult
from uetrace.analyze.http.sql_tables import store_tables

__all__ = ["ANALYZER", "NAME", "VIEWS", "Exchange", "HttpAnalyzer", "HttpParams", "HttpResult", "analyze_http",
           "applies", "filter_result", "process_label", "register_views", "run", "status_text", "store_tables"]
