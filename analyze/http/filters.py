"""Filtering an http result by process, status, path glob and latency."""

from __future__ import annotations

import dataclasses
import fnmatch
import re

import numpy as np
import pyarrow.compute as pc

from uetrace.analyze.distinct import sorted_unique
from uetrace.analyze.http.exchange_table import ExchangeTable
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
    """A new result with what p selects (the full one is left as it was, so it can be filtered again).
    Conditions on strings are decided once per distinct value (paths and statuses repeat)."""
    result = dataclasses.replace(full, params=p, websockets=list(full.websockets), tls=list(full.tls),
                                 notes=list(full.notes))
    x = full.exchanges
    keep = np.ones(len(x), bool)
    if p.pid is not None:
        keep &= ((x.valid("client_pid") & (x.ints("client_pid") == p.pid))
                 | (x.valid("server_pid") & (x.ints("server_pid") == p.pid)))
        result.tls = [t for t in result.tls if p.pid in (t.client_pid, t.server_pid)]
    if p.status:
        match = status_matcher(p.status)
        protocols, codes = x.strings("protocol")
        grpc = np.array([v == "grpc" for v in protocols] + [False])[codes]
        keep &= _matching(x, "status", match) | (grpc & _matching(x, "grpc_status", match))
    if p.path:
        values, codes = x.strings("path")
        hit = np.array([fnmatch.fnmatchcase(v, p.path) for v in values] + [False])
        keep &= hit[codes]
    if p.min_latency_ms is not None:
        keep &= x.valid("latency_ns") & (x.ints("latency_ns") >= p.min_latency_ms * 1e6)
    if p.anomalies:
        keep &= pc.list_value_length(x.column("anomalies")).to_numpy(zero_copy_only=False) > 0
    if not keep.all():
        kept = x.filter(keep)
        pairs = set(zip(kept.ints("conn_id").tolist(), kept.column("start_ts").to_pylist()))
        result.websockets = [w for w in result.websockets if (w.handshake.conn_id, w.handshake.start_ts) in pairs]
        result.exchanges = kept
    return result


def _matching(x: ExchangeTable, column: str, match) -> np.ndarray:
    """match(value) of an integer column, decided once per distinct value (None for nulls)."""
    values = x.column(column).to_numpy(zero_copy_only=False)
    valid = x.valid(column)
    distinct = sorted_unique(values[valid].astype(np.int64)) if valid.any() else np.zeros(0, np.int64)
    hits = {int(v) for v in distinct if match(int(v))}
    out = np.zeros(len(x), bool)
    if hits:
        out[valid] = np.isin(values[valid].astype(np.int64), list(hits))
    if match(None):
        out |= ~valid
    return out
