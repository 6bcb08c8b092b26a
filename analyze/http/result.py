"""What the http analyzer returns: params, exchanges, sessions, TLS connections, per-endpoint statistics."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow.compute as pc

from uetrace.analyze.distinct import distinct_rows
from uetrace.analyze.http import tls
from uetrace.analyze.http.anomalies import ConnectionAnomalies, by_connection
from uetrace.analyze.http.exchange import Exchange
from uetrace.analyze.http.exchange_table import ExchangeTable
from uetrace.analyze.http.websocket import WebSocketSession


@dataclass(frozen=True)
class HttpParams:
    """What to keep and how much to show. Filters apply to exchanges (and to the sessions and TLS
    connections they name); all None keeps everything."""

    pid: int | None = None  # either end's process
    status: str | None = None  # "404", "5xx", or a comma list "4xx,500"
    path: str | None = None  # glob on the request path ("/api/*")
    min_latency_ms: float | None = None
    slowest: int = 10  # rows in the slowest-requests table
    normalize_paths: bool = True  # group /users/42 and /users/43 as /users/{id} per endpoint
    anomalies: bool = False  # keep only exchanges with framing anomalies


@dataclass(slots=True)
class TlsConnection:
    conn_id: int
    client: str
    server: str
    info: tls.TlsInfo
    client_pid: int | None
    server_pid: int | None
    start_ts: int
    bytes_to_server: int
    bytes_to_client: int
    decrypted: bool = False  # the TLS tracer recorded its plaintext; its exchanges have tls=True

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("info"))
        return d


@dataclass(slots=True)
class EndpointStats:
    endpoint: str
    count: int
    errors: int
    rate: float  # requests per second over the capture's HTTP activity
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass
class HttpResult:
    params: HttpParams
    exchanges: ExchangeTable = field(default_factory=ExchangeTable)  # a list is taken too
    websockets: list[WebSocketSession] = field(default_factory=list)
    tls: list[TlsConnection] = field(default_factory=list)
    connections: int = 0  # TCP connections examined
    unrecognized: int = 0  # connections that spoke none of the protocols above
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.exchanges, ExchangeTable):  # a list, from a test or a small tool
            self.exchanges = ExchangeTable.of(self.exchanges)

    # -- statistics (on the columns: a big capture has millions of exchanges) -----------------------
    def span_ns(self) -> int:
        x = self.exchanges
        has = x.valid("start_ts")
        if not has.any():
            return 0
        start, end = x.ints("start_ts")[has], x.ints("end_ts")[has]
        end = np.where(end != 0, end, start)  # an exchange without an end spans its start
        return int(end.max() - start.min())

    def endpoint_codes(self) -> tuple[list[str], np.ndarray]:
        """(endpoint names, each exchange's index into them): see endpoint_of."""
        return endpoint_codes(self.exchanges, self.params.normalize_paths)

    def endpoints(self) -> list[EndpointStats]:
        """Per endpoint, busiest first."""
        names, code = self.endpoint_codes()
        x = self.exchanges
        span = self.span_ns() / 1e9
        timed = x.valid("latency_ns")
        lat = x.ints("latency_ns").astype(np.float64) / 1e6
        errors = error_mask(x)
        out = []
        order = np.argsort(code, kind="stable")
        bounds = np.searchsorted(code[order], np.arange(len(names) + 1))
        for k, name in enumerate(names):
            members = order[bounds[k]:bounds[k + 1]]
            if not members.size:
                continue
            ms = lat[members[timed[members]]]
            p = np.percentile(ms, [50, 90, 99]).tolist() if ms.size else [None] * 3
            out.append(EndpointStats(name, int(members.size), int(errors[members].sum()),
                                     members.size / span if span > 0 else 0.0, *p,
                                     float(ms.max()) if ms.size else None))
        out.sort(key=lambda s: (-s.count, s.endpoint))
        return out

    def slowest(self) -> list[Exchange]:
        """The params.slowest exchanges of highest latency (ties in analysis order)."""
        x = self.exchanges
        timed = np.flatnonzero(x.valid("latency_ns"))
        order = timed[np.argsort(-x.ints("latency_ns")[timed], kind="stable")][:self.params.slowest]
        return list(x.take(order))

    def connection_anomalies(self) -> list[ConnectionAnomalies]:
        """Framing anomalies counted per connection (those with none are left out)."""
        return by_connection(self.exchanges.filter(self._has_anomalies()))

    def _has_anomalies(self) -> np.ndarray:
        return pc.list_value_length(self.exchanges.column("anomalies")).to_numpy(zero_copy_only=False) > 0

    def summary(self) -> dict:
        span = self.span_ns()
        x = self.exchanges
        n = len(x)
        status = x.ints("status")
        grpc = x.valid("grpc_status") & (x.ints("grpc_status") != 0)
        return {
            "connections": self.connections,
            "exchanges": n,
            "complete": int(pc.sum(x.column("complete")).as_py() or 0),
            "errors": int(error_mask(x).sum()),
            "status_4xx": int(((status >= 400) & (status < 500)).sum()),
            "status_5xx": int((status >= 500).sum()),
            "grpc_errors": int(grpc.sum()),
            "span_s": span / 1e9,
            "rate_per_s": n / (span / 1e9) if span > 0 else 0.0,
            "websocket_sessions": len(self.websockets),
            "tls_connections": len(self.tls),
            "tls_decrypted": sum(t.decrypted for t in self.tls),
            "unrecognized_connections": self.unrecognized,
            "exchanges_with_anomalies": int(self._has_anomalies().sum()),
        }

    # -- rendering -------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "summary": self.summary(),
            "endpoints": [asdict(s) for s in self.endpoints()],
            "slowest": [e.to_dict() for e in self.slowest()],
            "exchanges": [e.to_dict() for e in self.exchanges],
            "websockets": [w.to_dict() for w in self.websockets],
            "tls": [t.to_dict() for t in self.tls],
            "anomalies": [c.to_dict() for c in self.connection_anomalies()],
            "notes": list(self.notes),
        }

    def to_text(self, width: int = 120) -> str:
        from uetrace.analyze.http.report import render_text
        return render_text(self, width)


_ID_SEGMENT = re.compile(r"^(\d+|[0-9a-fA-F]{16,}|[0-9a-fA-F]{8}-[0-9a-fA-F-]{27})$")


def endpoint_of(e: Exchange, normalize: bool = True) -> str:
    """The endpoint an exchange counts under: gRPC "service/method", else "METHOD /path" without the
    query, ids in the path replaced by {id} so that one route is one row."""
    return endpoint_name(e.protocol, e.method, e.path, e.grpc_service, e.grpc_method, normalize)


def endpoint_name(protocol: str, method: str, path: str, grpc_service: str, grpc_method: str,
                  normalize: bool = True) -> str:
    if protocol == "grpc" and grpc_method:
        return f"{grpc_service}/{grpc_method}"
    if not method and not path:
        return f"({protocol}, headers unavailable)"
    path = path.split("?", 1)[0]
    if normalize:
        path = "/".join("{id}" if _ID_SEGMENT.match(seg) else seg for seg in path.split("/"))
    return f"{method} {path}"


_KEY_COLUMNS = ("protocol", "method", "path", "grpc_service", "grpc_method")


def endpoint_codes(x: ExchangeTable, normalize: bool = True) -> tuple[list[str], np.ndarray]:
    """The distinct endpoint names of the exchanges, and each exchange's index into them. Each
    distinct (protocol, method, path, gRPC service and method) is named once."""
    if not len(x):
        return [], np.zeros(0, np.int64)
    values, codes = zip(*(x.strings(c) for c in _KEY_COLUMNS))
    keys, inverse = distinct_rows(codes, [len(v) + 1 for v in values])
    index: dict[str, int] = {}
    key_name = np.array([index.setdefault(endpoint_name(*(v[c] if c >= 0 else "" for v, c in zip(values, key)),
                                                        normalize=normalize), len(index)) for key in keys.tolist()],
                        np.int64)
    return list(index), key_name[inverse.reshape(-1)]


def error_mask(x: ExchangeTable) -> np.ndarray:
    """is_error of every exchange."""
    status = x.ints("status")
    return (x.valid("status") & (status >= 400)) | (x.valid("grpc_status") & (x.ints("grpc_status") != 0))


def is_error(e: Exchange) -> bool:
    return (e.status is not None and e.status >= 400) or e.grpc_status not in (None, 0)
