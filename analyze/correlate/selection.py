"""Requests chosen by id or endpoint, and the windows their serving threads spent on them: what
`trace flamegraph --request/--endpoint` draws."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uetrace.analyze.correlate.result import CorrelationResult, Request
from uetrace.analyze.distinct import distinct_rows
from uetrace.errors import BadInputError


def find_request(result: CorrelationResult, ident: str) -> Request:
    r = result.find(ident)
    if r is None:
        raise BadInputError(f"no request {ident!r}: ids run from 0 to {len(result.requests) - 1} "
                            "(`trace requests --json` lists them), or give a span id")
    return r


def endpoint_requests(result: CorrelationResult, endpoint: str) -> list[Request]:
    """Requests of an endpoint as the http section names it ("GET /users/{id}", "pkg.Svc/Method"); a
    literal path ("GET /users/42") matches too."""
    want = " ".join(endpoint.split())
    x = result.exchanges
    match = np.zeros(len(result.order), bool)
    if want in result.endpoint_names:
        match |= result.endpoint_code == result.endpoint_names.index(want)
    if len(x):
        (methods, mcode), (paths, pcode) = x.strings("method"), x.strings("path")
        pairs, inverse = distinct_rows([mcode, pcode], [len(methods) + 1, len(paths) + 1])
        literal = np.array([f"{methods[m] if m >= 0 else ''} {(paths[p] if p >= 0 else '').split('?', 1)[0]}" == want
                            for m, p in pairs.tolist()])
        match |= literal[inverse.reshape(-1)][result.order]
    out = list(result.requests.take(np.flatnonzero(match).tolist()))
    if not out:
        known = sorted(result.endpoint_names)
        hint = ", ".join(repr(k) for k in known[:8]) + (", ..." if len(known) > 8 else "")
        raise BadInputError(f"no requests of endpoint {endpoint!r}" + (f"; endpoints: {hint}" if known else ""))
    return out


def serving_windows(requests: Sequence[Request]) -> tuple[tuple[int, int, int], ...]:
    """(tid, start, end) of each request's serving side (the client's when the server was not traced)."""
    out = []
    for r in requests:
        s = r.main
        if s is not None:
            out.append((s.window.tid, s.window.start_ts, s.window.end_ts))
    return tuple(out)


def select(result: CorrelationResult, ids: Sequence[str], endpoints: Sequence[str]) -> list[Request]:
    chosen: dict[int, Request] = {}
    for ident in ids:
        r = find_request(result, ident)
        chosen[r.request_id] = r
    for ep in endpoints:
        for r in endpoint_requests(result, ep):
            chosen[r.request_id] = r
    return [chosen[k] for k in sorted(chosen)]
