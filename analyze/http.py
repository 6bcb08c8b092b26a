"""The http analyzer: every TCP connection in `sock_data` (and the TLS tracer's plaintext in `tls_data`,
when present) through the protocol parsers, into one result of exchanges, WebSocket sessions and TLS
connections, with per-endpoint statistics.

As an analyzer (see registry.py): `run(cap, params) -> HttpResult` and `register_views(cap)`, which
exposes the exchanges to SQL as table `http_exchanges` (plus `http_websocket_frames`, `http_tls`).
Underneath, `analyze_http(con, params)` and `store_tables(con, result)` work on any DuckDB connection
with a sock_data-shaped view, so tests and the benchmark need no archive.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import gc
import io
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from uetrace.analyze import http1, http2, tls, websocket
from uetrace.analyze.capture import Capture
from uetrace.analyze.http1 import Exchange
from uetrace.analyze.streams import Connection, Socket, View, load_sockets, pair_sockets
from uetrace.analyze.websocket import WebSocketSession

NAME = "http"
VIEWS: tuple[str, ...] = ("http_exchanges", "http_websocket_frames", "http_tls")

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
            "notes": list(self.notes),
        }

    def to_text(self, width: int = 120) -> str:
        out = io.StringIO()
        console = Console(file=out, width=width, color_system=None, force_terminal=False)
        s = self.summary()
        console.print(f"HTTP: {s['exchanges']} exchanges on {s['connections']} connections over "
                      f"{s['span_s']:.3f} s ({s['rate_per_s']:.1f}/s); errors {s['errors']} "
                      f"(4xx {s['status_4xx']}, 5xx {s['status_5xx']}, gRPC {s['grpc_errors']}); "
                      f"incomplete {s['exchanges'] - s['complete']}")
        for note in self.notes:
            console.print(f"note: {note}")
        if self.exchanges:
            t = Table(title="Endpoints", title_justify="left")
            for col in ("endpoint", "count", "req/s", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"):
                t.add_column(col, justify="left" if col == "endpoint" else "right")
            for e in self.endpoints():
                t.add_row(e.endpoint, str(e.count), f"{e.rate:.1f}", str(e.errors), _ms(e.p50_ms),
                          _ms(e.p90_ms), _ms(e.p99_ms), _ms(e.max_ms))
            console.print(t)
            t = Table(title="Slowest requests", title_justify="left")
            for col in ("latency ms", "method", "path", "status", "client", "server", "note"):
                t.add_column(col, justify="right" if col in ("latency ms", "status") else "left")
            for e in self.slowest():
                t.add_row(_ms((e.latency_ns or 0) / 1e6), e.method, e.path[:60], _status(e),
                          process_label(e.client_pid, e.client_comm), process_label(e.server_pid, e.server_comm),
                          e.note[:40])
            console.print(t)
        if self.websockets:
            t = Table(title="WebSocket sessions", title_justify="left")
            for col in ("path", "client", "server", "frames", "by kind"):
                t.add_column(col)
            for w in self.websockets:
                counts = ", ".join(f"{k}: {v}" for k, v in sorted(w.counts().items()))
                hs = w.handshake
                t.add_row(hs.path, hs.client, hs.server, str(len(w.frames)), counts)
            console.print(t)
        if self.tls:
            t = Table(title="TLS connections (encrypted)", title_justify="left")
            for col in ("client", "server", "SNI", "ALPN", "version", "decrypted"):
                t.add_column(col)
            for c in self.tls:
                t.add_row(c.client, c.server, c.info.sni or "?", c.info.alpn or ",".join(c.info.alpn_offered),
                          c.info.version or "?", "yes" if c.decrypted else "no")
            console.print(t)
        return out.getvalue()


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _opt(v: int | None) -> str:
    return "-" if v is None else str(v)


def process_label(pid: int | None, comm: str) -> str:
    """"1234 (nginx)", or "-" when that end was not captured."""
    if pid is None:
        return "-"
    return f"{pid} ({comm})" if comm else str(pid)


def status_text(e: Exchange) -> str:
    """The status column: the HTTP status, or "grpc N" for a gRPC call that ended with a grpc-status."""
    return _status(e)


def _status(e: Exchange) -> str:
    if e.protocol == "grpc" and e.grpc_status is not None:
        return f"grpc {e.grpc_status}"
    return _opt(e.status)


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


# -- analysis ------------------------------------------------------------------------------------


# -- the analyzer protocol (registry.py) ------------------------------------------------------------


def applies(cap: Capture) -> bool:
    return cap.has("sock_data") or cap.has("tls_data")


def params_of(params: HttpParams | dict[str, Any] | None) -> HttpParams:
    """HttpParams from what a front end passes: `trace analyze` gives {"top": N} (rows in top-N
    tables, here the slowest requests); other keys are HttpParams fields."""
    if params is None or isinstance(params, HttpParams):
        return params or HttpParams()
    fields = {f.name for f in dataclasses.fields(HttpParams)}
    kw = {k: v for k, v in params.items() if k in fields}
    if "top" in params and "slowest" not in kw:
        kw["slowest"] = int(params["top"])
    return HttpParams(**kw)


def run(cap: Capture, params: HttpParams | dict[str, Any] | None = None) -> HttpResult:
    """The http section: every exchange of the capture, filtered by params, with the comm of the
    processes at both ends. The unfiltered analysis is kept on `cap`, so that register_views and
    several runs with different filters parse the payloads once."""
    return filter_result(_full_result(cap), params_of(params))


def register_views(cap: Capture) -> None:
    store_tables(cap.con, _full_result(cap))


def _full_result(cap: Capture) -> HttpResult:
    cached = getattr(cap, "_http_result", None)
    if cached is None:
        cached = analyze_http(cap.con)
        _add_comms(cap, cached.exchanges)
        cap._http_result = cached  # type: ignore[attr-defined]
    return cached


def _add_comms(cap: Capture, exchanges: list[Exchange]) -> None:
    """comm of client and server pids from the process snapshot and the proc tracer's exec and exit
    records (a short-lived process, a curl run, may be gone before any snapshot). The latest row per
    pid wins: a pid that exec'd during the capture is named after what it became, which is what
    made the request in the usual fork+exec case."""
    sources = []
    if cap.has("processes"):
        sources.append("SELECT pid, comm, ts FROM processes")
    if cap.has("proc"):
        sources.append("SELECT pid, comm, ts FROM proc WHERE op IN (1, 3) AND pid = tid")  # exec, exit
    if not sources or not exchanges:
        return
    comms: dict[int, str] = dict(cap.query(
        f"SELECT pid, arg_max(comm, ts) FROM ({' UNION ALL '.join(sources)}) WHERE comm <> '' GROUP BY pid"))
    for e in exchanges:
        if e.client_pid is not None:
            e.client_comm = comms.get(e.client_pid) or ""
        if e.server_pid is not None:
            e.server_comm = comms.get(e.server_pid) or ""


# -- analysis ------------------------------------------------------------------------------------


def analyze_http(con: duckdb.DuckDBPyConnection, params: HttpParams | None = None) -> HttpResult:
    """Reconstruct every HTTP/1, HTTP/2, gRPC, WebSocket and TLS connection from the `sock_data` view
    (and `tls_data` when the TLS tracer ran), then keep what params select. Never raises on payload
    content; a missing `sock_data` and `tls_data` gives an empty result with a note."""
    result = HttpResult(HttpParams())
    views = _views(con)
    if "sock_data" not in views and "tls_data" not in views:
        result.notes.append("no sock_data: the socket tracer did not run")
        return filter_result(result, params or HttpParams())
    # Loading and parsing allocate a few objects per record and message, none of them in cycles: the
    # cyclic collector would only rescan the growing streams and result again and again (10-25% of
    # the time on big captures).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _analyze(con, views, result)
    finally:
        if gc_was_enabled:
            gc.enable()
    return filter_result(result, params or HttpParams())


def _analyze(con: duckdb.DuckDBPyConnection, views: set[str], result: HttpResult) -> None:
    roles = _roles_from_conn_records(con) if "sock_conn" in views else {}
    ids: dict[tuple, int] = {}  # 4-tuple -> conn_id of the TLS tracer's connections
    jobs: list[tuple[Connection, int, bool]] = []
    # The TLS tracer's plaintext first: a connection it decrypted is read from it, and its encrypted
    # bytes in sock_data only give the TLS handshake facts (SNI, ALPN, version).
    decrypted: set[int] = set()
    if "tls_data" in views:
        for conn in pair_sockets(load_sockets(con, "tls_data", source="tls")):
            conn_id = ids.setdefault(_conn_key(conn.sock), len(ids))
            decrypted.add(conn_id)
            jobs.append((conn, conn_id, True))
    if "sock_data" in views:
        conns = pair_sockets(load_sockets(con, "sock_data"))
        next_id = len(ids)
        for conn in conns:
            # The socket of a connection the TLS tracer decrypted shares its id. (Should the kernel
            # reuse that 4-tuple within the capture, the later connection shares it too: rare enough.)
            conn_id = ids.get(_conn_key(conn.sock))
            if conn_id is None:
                conn_id, next_id = next_id, next_id + 1
            jobs.append((conn, conn_id, False))
        result.connections = len(conns)
    else:
        result.connections = len(decrypted)
    _run_jobs(jobs, roles, result, decrypted)
    for t in result.tls:
        t.decrypted = t.conn_id in decrypted


def _run_jobs(jobs: list[tuple[Connection, int, bool]], roles: dict[int, bool], result: HttpResult,
              decrypted: set[int]) -> None:
    # Serial on purpose: a fork-based pool over connections was tried; pickling the results back and
    # copy-on-write faults on the shared streams cost ~25% more CPU, and on a busy 2-CPU host it lost.
    for conn, conn_id, plaintext in jobs:
        _analyze_connection(conn, conn_id, roles, result, plaintext, conn_id in decrypted and not plaintext)


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def _roles_from_conn_records(con: duckdb.DuckDBPyConnection) -> dict[int, bool]:
    """sock_id -> is the client end, from the socket tracer's connect (client) and accept (server)
    records, when the capture has them. Content decides when it is clear; this breaks ties."""
    try:
        rows = con.execute("SELECT DISTINCT sock_id, op FROM sock_conn WHERE op IN (1, 2)").fetchall()
    except duckdb.Error:
        return {}
    return {sock_id: op == 2 for sock_id, op in rows}


def _conn_key(s: Socket) -> tuple:
    return tuple(sorted((s.local, s.remote)))


def _choose_view(conn: Connection, roles: dict[int, bool]) -> View:
    """Decide which end is the client, from what each end sent, then pick the end to read: the
    client's (latency as the client saw it) unless the server's capture holds more of the bytes."""
    ends = [s for s in (conn.sock, conn.peer) if s is not None]
    client = server = None
    for s in ends:
        if _opens_connection(s.egress) or http1.looks_like_responses(s.ingress):
            client = s
        elif _opens_connection(s.ingress) or http1.looks_like_responses(s.egress):
            server = s
    for s in ends:
        if client is None and server is not s and roles.get(s.sock_id) is True:
            client = s
        if server is None and client is not s and roles.get(s.sock_id) is False:
            server = s
    if client is None and server is None:  # no clue in content: the server usually has the lower port
        s = ends[0]
        client, server = (s, None) if s.lport > s.rport else (None, s)
    if client is not None and server is None and len(ends) == 2:
        server = ends[1] if ends[0] is client else ends[0]
    if server is not None and client is None and len(ends) == 2:
        client = ends[1] if ends[0] is server else ends[0]
    if client is not None and (server is None or _bytes(client) >= _bytes(server)):
        return View.of(conn, client, True)
    assert server is not None
    return View.of(conn, server, False)


def _opens_connection(stream) -> bool:
    return (tls.client_hello_in(stream) or http2.starts_with_preface(stream)
            or http1.looks_like_requests(stream))


def _bytes(s: Socket) -> int:
    return s.egress.length + s.ingress.length


def _analyze_connection(conn: Connection, conn_id: int, roles: dict[int, bool], result: HttpResult,
                        plaintext: bool, tls_only: bool = False) -> None:
    try:
        view = _choose_view(conn, roles)
        _dispatch(view, conn_id, result, plaintext, tls_only)
    except Exception as e:  # a parser bug costs one connection, never the analysis
        result.notes.append(f"connection {conn_id}: unparsed ({type(e).__name__}: {e})")


def _dispatch(view: View, conn_id: int, result: HttpResult, plaintext: bool, tls_only: bool = False) -> None:
    """tls_only: the TLS tracer decrypted this connection, so its socket bytes are ciphertext whatever
    they look like; only a TLS handshake is taken from them."""
    req, resp = view.requests, view.responses
    if not plaintext:
        info = tls.detect(req, resp)
        if info is not None:
            c_pid, _, s_pid, _ = view.who(req, 0) if req.length else view.who(resp, 0)
            first = [s.first_ts for s in (req, resp) if s.hi > s.lo]
            result.tls.append(TlsConnection(conn_id, view.client_addr, view.server_addr, info, c_pid, s_pid,
                                            min(first) if first else 0, req.length, resp.length))
            return
        if tls_only:
            return
    if http2.starts_with_preface(req):
        result.exchanges.extend(http2.exchanges(view, conn_id, tls=plaintext))
        return
    if http1.looks_like_requests(req) or http1.looks_like_responses(resp):
        exchanges, switch = http1.parse_exchanges(view, conn_id, tls=plaintext)
        result.exchanges.extend(exchanges)
        if switch is None:
            return
        if switch.protocol == "websocket":
            result.websockets.append(websocket.parse_session(switch.exchange, req, switch.request_end, resp,
                                                             switch.response_end))
        elif switch.protocol == "h2c":
            result.exchanges.extend(http2.exchanges(view, conn_id, switch.request_end, switch.response_end,
                                                    tls=plaintext, upgrade=switch.exchange))
        else:
            switch.exchange.note = switch.exchange.note or f"switched to {switch.protocol}: not decoded"
        return
    if http2.looks_like_frames(req) or http2.looks_like_frames(resp):
        result.exchanges.extend(http2.exchanges(view, conn_id, tls=plaintext))
        return
    result.unrecognized += 1


# -- filters -------------------------------------------------------------------------------------


def _status_matcher(spec: str):
    """"404" or "5xx" or "4xx,500" -> predicate on a status code."""
    pats = []
    for part in spec.replace(" ", "").split(","):
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
        match = _status_matcher(p.status)
        keep = [e for e in keep if match(e.status) or (e.protocol == "grpc" and match(e.grpc_status))]
    if p.path:
        keep = [e for e in keep if fnmatch.fnmatchcase(e.path, p.path)]
    if p.min_latency_ms is not None:
        floor = p.min_latency_ms * 1e6
        keep = [e for e in keep if e.latency_ns is not None and e.latency_ns >= floor]
    if keep is not result.exchanges:
        kept = {(e.conn_id, e.start_ts) for e in keep}
        result.websockets = [w for w in result.websockets if (w.handshake.conn_id, w.handshake.start_ts) in kept]
        result.exchanges = keep
    return result


# -- SQL -----------------------------------------------------------------------------------------

_EXCHANGE_SCHEMA = pa.schema([
    ("conn_id", pa.int64()), ("protocol", pa.string()), ("client", pa.string()), ("server", pa.string()),
    ("method", pa.string()), ("path", pa.string()), ("host", pa.string()), ("status", pa.int32()),
    ("req_bytes", pa.int64()), ("resp_bytes", pa.int64()), ("start_ts", pa.uint64()), ("end_ts", pa.uint64()),
    ("latency_ns", pa.int64()), ("client_pid", pa.uint32()), ("client_tid", pa.uint32()),
    ("server_pid", pa.uint32()), ("server_tid", pa.uint32()), ("measured_at", pa.string()),
    ("complete", pa.bool_()), ("note", pa.string()), ("stream_id", pa.int64()), ("grpc_service", pa.string()),
    ("grpc_method", pa.string()), ("grpc_status", pa.int32()), ("grpc_message", pa.string()),
    ("tls", pa.bool_()), ("client_comm", pa.string()), ("server_comm", pa.string()),
])
_FRAME_SCHEMA = pa.schema([
    ("session", pa.int64()), ("conn_id", pa.int64()), ("direction", pa.string()), ("opcode", pa.int32()),
    ("opcode_name", pa.string()), ("length", pa.int64()), ("masked", pa.bool_()), ("fin", pa.bool_()),
    ("ts", pa.uint64()), ("complete", pa.bool_()), ("close_code", pa.int32()),
])
_TLS_SCHEMA = pa.schema([
    ("conn_id", pa.int64()), ("client", pa.string()), ("server", pa.string()), ("sni", pa.string()),
    ("alpn", pa.string()), ("alpn_offered", pa.list_(pa.string())), ("version", pa.string()),
    ("handshake_seen", pa.bool_()), ("client_pid", pa.uint32()), ("server_pid", pa.uint32()),
    ("start_ts", pa.uint64()), ("bytes_to_server", pa.int64()), ("bytes_to_client", pa.int64()),
    ("decrypted", pa.bool_()),
])


def store_tables(con: duckdb.DuckDBPyConnection, result: HttpResult) -> None:
    """Create tables http_exchanges (one row per exchange), http_websocket_frames and http_tls, so
    that `trace query` can join them with the raw records (client_tid + time window -> stacks, ...)."""
    ex = {name: [getattr(e, name) for e in result.exchanges] for name in _EXCHANGE_SCHEMA.names}
    frames: dict[str, list] = {name: [] for name in _FRAME_SCHEMA.names}
    for i, w in enumerate(result.websockets):
        for f in w.frames:
            row = {**f.to_dict(), "session": i, "conn_id": w.handshake.conn_id}
            for name in _FRAME_SCHEMA.names:
                frames[name].append(row[name])
    tls_rows = [t.to_dict() for t in result.tls]
    tables = {
        "http_exchanges": pa.table(ex, schema=_EXCHANGE_SCHEMA),
        "http_websocket_frames": pa.table(frames, schema=_FRAME_SCHEMA),
        "http_tls": pa.Table.from_pylist(tls_rows, schema=_TLS_SCHEMA),
    }
    for name, table in tables.items():
        con.register("_uetrace_http_tmp", table)
        try:
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _uetrace_http_tmp")
        finally:
            con.unregister("_uetrace_http_tmp")
