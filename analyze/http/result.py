"""What the http analyzer returns: params, exchanges, sessions, TLS connections, per-endpoint statistics."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

from uetrace.analyze.http import tls
from uetrace.analyze.http.anomalies import ConnectionAnomalies, by_connection
from uetrace.analyze.http.exchange import Exchange
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
    exchanges: list[Exchange] = field(default_factory=list)
    websockets: list[WebSocketSession] = field(default_factory=list)
    tls: list[TlsConnection] = field(default_factory=list)
    connections: int = 0  # TCP connections examined
    unrecognized: int = 0  # connections that spoke none of the protocols above
    notes: list[str] = field(default_factory=list)

    # -- statistics ------------------------------------------------------------------------------
    def span_ns(self) -> int:
        starts = [e.start_ts for e in self.exchanges if e.start_ts is not None]
        ends = [e.end_ts or e.start_ts for e in self.exchanges if e.start_ts is not None]
        return max(ends) - min(starts) if starts else 0

    def endpoints(self) -> list[EndpointStats]:
        """Per endpoint, busiest first."""
        groups: dict[str, list[Exchange]] = {}
        names: dict[tuple, str] = {}  # paths repeat: normalize each distinct one once
        for e in self.exchanges:
            key = (e.protocol, e.method, e.path, e.grpc_service, e.grpc_method)
            name = names.get(key)
            if name is None:
                name = names[key] = endpoint_of(e, self.params.normalize_paths)
            groups.setdefault(name, []).append(e)
        span = self.span_ns() / 1e9
        out = []
        for name, exs in groups.items():
            lat = np.array([e.latency_ns for e in exs if e.latency_ns is not None], dtype=np.float64) / 1e6
            p = np.percentile(lat, [50, 90, 99]).tolist() if lat.size else [None] * 3
            out.append(EndpointStats(name, len(exs), sum(is_error(e) for e in exs),
                                     len(exs) / span if span > 0 else 0.0, *p,
                                     float(lat.max()) if lat.size else None))
        out.sort(key=lambda s: (-s.count, s.endpoint))
        return out

    def slowest(self) -> list[Exchange]:
        timed = [e for e in self.exchanges if e.latency_ns is not None]
        timed.sort(key=lambda e: -(e.latency_ns or 0))
        return timed[:self.params.slowest]

    def connection_anomalies(self) -> list[ConnectionAnomalies]:
        """Framing anomalies counted per connection (those with none are left out)."""
        return by_connection(self.exchanges)

    def summary(self) -> dict:
        span = self.span_ns()
        return {
            "connections": self.connections,
            "exchanges": len(self.exchanges),
            "complete": sum(e.complete for e in self.exchanges),
            "errors": sum(is_error(e) for e in self.exchanges),
            "status_4xx": sum(1 for e in self.exchanges if e.status and 400 <= e.status < 500),
            "status_5xx": sum(1 for e in self.exchanges if e.status and e.status >= 500),
            "grpc_errors": sum(1 for e in self.exchanges if e.grpc_status not in (None, 0)),
            "span_s": span / 1e9,
            "rate_per_s": len(self.exchanges) / (span / 1e9) if span > 0 else 0.0,
            "websocket_sessions": len(self.websockets),
            "tls_connections": len(self.tls),
            "tls_decrypted": sum(t.decrypted for t in self.tls),
            "unrecognized_connections": self.unrecognized,
            "exchanges_with_anomalies": sum(1 for e in self.exchanges if e.anomalies),
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
    if e.protocol == "grpc" and e.grpc_method:
        return f"{e.grpc_service}/{e.grpc_method}"
    if not e.method and not e.path:
        return f"({e.protocol}, headers unavailable)"
    path = e.path.split("?", 1)[0]
    if normalize:
        path = "/".join("{id}" if _ID_SEGMENT.match(seg) else seg for seg in path.split("/"))
    return f"{e.method} {path}"


def is_error(e: Exchange) -> bool:
    return (e.status is not None and e.status >= 400) or e.grpc_status not in (None, 0)
