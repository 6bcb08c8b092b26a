"""The http analyzer's text report, and the cell formats `trace requests` shares with it."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from uetrace.analyze.http.exchange import Exchange
from uetrace.analyze.http.result import HttpResult


def render_text(result: HttpResult, width: int = 120) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=False)
    s = result.summary()
    console.print(f"HTTP: {s['exchanges']} exchanges on {s['connections']} connections over "
                  f"{s['span_s']:.3f} s ({s['rate_per_s']:.1f}/s); errors {s['errors']} "
                  f"(4xx {s['status_4xx']}, 5xx {s['status_5xx']}, gRPC {s['grpc_errors']}); "
                  f"incomplete {s['exchanges'] - s['complete']}"
                  + (f"; with framing anomalies {n}" if (n := s["exchanges_with_anomalies"]) else ""))
    for note in result.notes:
        console.print(f"note: {note}")
    if result.exchanges:
        t = Table(title="Endpoints", title_justify="left")
        for col in ("endpoint", "count", "req/s", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"):
            t.add_column(col, justify="left" if col == "endpoint" else "right")
        for e in result.endpoints():
            t.add_row(e.endpoint, str(e.count), f"{e.rate:.1f}", str(e.errors), _ms(e.p50_ms),
                      _ms(e.p90_ms), _ms(e.p99_ms), _ms(e.max_ms))
        console.print(t)
        t = Table(title="Slowest requests", title_justify="left")
        for col in ("latency ms", "method", "path", "status", "client", "server", "note"):
            t.add_column(col, justify="right" if col in ("latency ms", "status") else "left")
        for e in result.slowest():
            t.add_row(_ms((e.latency_ns or 0) / 1e6), e.method, e.path[:60], _status(e),
                      process_label(e.client_pid, e.client_comm), process_label(e.server_pid, e.server_comm),
                      e.note[:40])
        console.print(t)
    conns = result.connection_anomalies()
    if conns:
        t = Table(title="Framing anomalies (HTTP/1, per connection)", title_justify="left")
        for col in ("conn", "client", "server", "exchanges", "kinds (exchanges)", "smuggling signature"):
            t.add_column(col, justify="right" if col in ("conn", "exchanges") else "left")
        for c in conns:
            kinds = ", ".join(f"{k} ({n})" for k, n in c.counts.items())
            t.add_row(str(c.conn_id), c.client, c.server, str(c.exchanges), kinds, "yes" if c.smuggling else "no")
        console.print(t)
        suspects = [c for c in conns if c.smuggling]
        if suspects:
            console.print("Smuggling signature (the two ends could frame the same bytes differently): "
                          + ", ".join(f"{c.client} -> {c.server} (conn {c.conn_id})" for c in suspects))
    if result.websockets:
        t = Table(title="WebSocket sessions", title_justify="left")
        for col in ("path", "client", "server", "frames", "by kind"):
            t.add_column(col)
        for w in result.websockets:
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(w.counts().items()))
            hs = w.handshake
            t.add_row(hs.path, hs.client, hs.server, str(len(w.frames)), counts)
        console.print(t)
    if result.tls:
        t = Table(title="TLS connections (encrypted)", title_justify="left")
        for col in ("client", "server", "SNI", "ALPN", "version", "decrypted"):
            t.add_column(col)
        for c in result.tls:
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
