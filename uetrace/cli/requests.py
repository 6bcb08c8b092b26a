"""`trace requests`: the HTTP, gRPC and WebSocket-handshake exchanges of a capture, one per line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from uetrace.cli.options import Duration, archives_argument, format_option, json_option
from uetrace.cli.output import echo_json_tables, print_rows

if TYPE_CHECKING:
    import numpy as np

    from uetrace.analyze.http.exchange import Exchange

COLUMNS = ("id", "time s", "proto", "method", "path", "status", "latency ms", "req bytes", "resp bytes", "client",
           "server", "note")


@click.command("requests")
@archives_argument
@click.option("--status", default=None, metavar="LIST",
              help="Keep these statuses: 404, 5xx, or a comma list (4xx,500); gRPC calls match on grpc-status.")
@click.option("--path", "path_glob", default=None, metavar="GLOB", help="Keep request paths matching this glob "
              "('/api/*'; gRPC paths are /package.Service/Method).")
@click.option("--min-latency", type=Duration(), default=None,
              help="Keep exchanges at least this slow (100ms, 1.5s).")
@click.option("--pid", type=int, default=None, help="Keep exchanges with this process at either end.")
@click.option("--anomalies", "anomalous", is_flag=True, help="Keep HTTP/1 exchanges whose framing a strict RFC 9112 "
              "recipient would refuse or read differently (cl_and_te, duplicate_content_length, desync, ...), "
              "and list the kinds.")
@json_option("Every field of every exchange, as a JSON list, with its request id, trace and span ids and the "
             "evidence correlated to it (cpu_ms, offcpu_ms, lock_wait_ms, alloc_bytes, packets, retransmits); "
             "with several captures also capture_id, host, peer_capture_id, peer_request_id, wall_start_ns, "
             "wall_end_ns, clock_offset_ns, clock_uncertainty_ns.")
@format_option
def command(archives: tuple[Path, ...], status: str | None, path_glob: str | None, min_latency: float | None,
            pid: int | None, anomalous: bool, as_json: bool, fmt: str):
    """List the requests of a capture: HTTP/1.x, HTTP/2, gRPC and the handshakes of
    WebSocket sessions, decoded offline from the socket (and TLS) tracer's records.

    Time is seconds since the capture started; latency is measured at the end
    that was read (the client's when both were captured). The same rows are the
    `http_exchanges` table of `trace query`. `id` is what `trace request` and
    `trace flamegraph --request` take.

    \b
    Several archives (or a quoted pattern): the exchanges of every capture,
    each with its capture and host. An exchange recorded at both ends by
    captures of different hosts is paired (same connection as both sides saw
    it, same place in it): both rows name their peer, share one trace id, and
    the server span is the client span's child. The hosts' clock offset is
    estimated from the pairs (NTP's minimum-delay method) and printed to
    stderr with its uncertainty; times are then on the first capture's clock
    (wall time). Archives of one capture (rotated parts) are one capture.

    \b
    Examples:
      trace requests run.tar.zst
      trace requests client.tar.zst server.tar.zst --json
      trace requests run.tar.zst --status 5xx --path '/api/*'
      trace requests run.tar.zst --min-latency 100ms --pid 1234 --json
      trace requests run.tar.zst --anomalies
      trace query run.tar.zst "SELECT method, count(*) FROM http_exchanges GROUP BY 1"
    """
    import numpy as np

    from uetrace.analyze import http
    from uetrace.analyze.http.filters import status_matcher
    from uetrace.cli.reading import reading

    if status is not None:
        status_matcher(status)  # a bad --status fails before the archive is read

    params = http.HttpParams(pid=pid, status=status, path=path_glob, anomalies=anomalous,
                             min_latency_ms=min_latency * 1e3 if min_latency is not None else None)
    missing = "no socket records (capture with the sock tracer: -t sock,proc)"
    if len(archives) > 1:
        from uetrace.cli.requests_set import several
        several(archives, params, missing, as_json, fmt)
        return
    with reading(archives[0], http.ANALYZER.applies, missing) as db:
        result = http.ANALYZER.run(db, params)
        t0 = db.info.start_ns or 0
        # Time order across connections (the parsers emit them connection by connection), which is
        # the order of request ids.
        if as_json:
            from uetrace.analyze import correlate
            corr = correlate.correlate(db)
            echo_json_tables(corr.json_tables(np.sort(corr.request_ids(result.exchanges.rows()))))
            return
        ids = _request_ids(db, result.exchanges.rows())
        by_time = np.argsort(ids, kind="stable")
        exchanges = list(result.exchanges.take(by_time))
        ids = ids[by_time].tolist()
    if not t0 and exchanges:
        t0 = min(_when(e) for e in exchanges)
    rows = [(rid, f"{(_when(e) - t0) / 1e9:.3f}" if _when(e) else "",
             e.protocol + (" tls" if e.tls else ""), e.method,
             _path(e), http.status_text(e), "" if e.latency_ns is None else f"{e.latency_ns / 1e6:.2f}",
             e.req_bytes, e.resp_bytes, http.process_label(e.client_pid, e.client_comm),
             http.process_label(e.server_pid, e.server_comm), e.note) for rid, e in zip(ids, exchanges)]
    columns = COLUMNS
    if anomalous:
        columns = (*COLUMNS, "anomalies")
        rows = [(*row, ", ".join(e.anomalies)) for row, e in zip(rows, exchanges, strict=True)]
    print_rows(columns, rows, fmt, title=f"{len(rows)} exchanges")


def _request_ids(db, rows: np.ndarray) -> np.ndarray:
    """The request id of each exchange (by its row in the http analysis): its rank in time order among
    all the capture's exchanges (`trace request ARCHIVE ID`)."""
    import numpy as np

    from uetrace.analyze import correlate, http
    order = correlate.exchange_order(http.run(db, http.HttpParams()).exchanges)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank[rows]


def _when(e: Exchange) -> int:
    """The exchange's first timestamp: a response whose request predates the capture has only an end."""
    return e.start_ts if e.start_ts is not None else (e.end_ts or 0)


def _path(e: Exchange) -> str:
    if e.protocol == "grpc" and e.grpc_method:
        return f"{e.grpc_service}/{e.grpc_method}"
    return e.path
