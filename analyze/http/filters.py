"""Filtering an http result by process, status, path glob and latency."""

from __future__ import annotations

import dataclasses
import fnmatch
import re

from uetrace.analyze.http.result import HttpParams, HttpResult
from uetrace.errors import BadInputError


def status_matcher(spec: str):
    """"404" or "5xx" or "4xx,500" -> predicate on a status code; BadInputError for anything else
    (the spec becomes a regular expression: only digits and x reach it)."""
    pats = []
    for part in spec.replace(" ", "").split(","):
        if part and not re.fullmatch(r"[0-9xX]{1,3}", part):
            raise BadInputError(f"bad status {part!r}: use a code (404), a class (5xx) or a comma list (4xx,500)")
        if part:
            pats.append(re.compile("^" + part.lower().replace("x", r"\d") + "$"))
    return lambda status: status is not None and any(p.match(str(status)) for p in pats)


def filter_result(full: HttpResult, p: HttpParams) -> HttpResult:
    """A new result with what p selects (the full one is left as it was, so it can be filtered again)."""
    result = dataclasses.replace(full, params=p, exchanges=list(full.exchanges), websockets=list(full.websockets),
                                 tls=list(full.tls), notes=list(full.notes))
    keep = result.exchanges
    if p.pid is not None:
        keep = [e for e in keep if p.pid in (e.client_pid, e.server_pid)]
        result.tls = [t for t in result.tls if p.pid in (t.client_pid, t.server_pid)]
    if p.status:
        match = status_matcher(p.status)
        keep = [e for e in keep if match(e.status) or (e.protocol == "grpc" and match(e.grpc_status))]
    if p.path:
        keep = [e for e in keep if fnmatch.fnmatchcase(e.path, p.path)]
    if p.min_latency_ms is not None:
        floor = p.min_latency_ms * 1e6
        keep = [e for e in keep if e.latency_ns is not None and e.latency_ns >= floor]
    if p.anomalies:
        keep = [e for e in keep if e.anomalies]
    if keep is not result.exchanges:
        kept = {(e.conn_id, e.start_ts) for e in keep}
        result.websockets = [w for w in result.websockets if (w.handshake.conn_id, w.handshake.start_ts) in kept]
        result.exchanges = keep
    return result
