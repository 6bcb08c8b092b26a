"""`trace requests A B ...`: the exchanges of several captures, paired across hosts (analyze/cross_host)."""

from __future__ import annotations

from pathlib import Path

from uetrace.cli.output import echo_json, make_console, print_rows

COLUMNS = ("host", "id", "time s", "proto", "method", "path", "status", "latency ms", "req bytes", "resp bytes",
           "client", "server", "peer")


def print_clock_notes(notes: list[str]) -> None:
    from rich.markup import escape

    from uetrace.analyze.text import printable
    err = make_console(stderr=True)
    for n in notes:
        err.print(f"[dim]note:[/] {escape(printable(n))}")  # host names are archive text


def several(archives: tuple[Path, ...], params, missing: str, as_json: bool, fmt: str) -> None:
    from uetrace.analyze import correlate, http
    from uetrace.analyze.cross_host import cross_host
    from uetrace.cli.reading import reading_set
    from uetrace.cli.requests import _path, _when

    with reading_set(archives, applies=http.ANALYZER.applies, missing=missing) as cs:
        xh = cross_host(cs.captures)
        print_clock_notes(xh.clock_notes())
        items = []
        for i, c in enumerate(cs.captures):
            if not http.ANALYZER.applies(c.db):
                continue
            corr = xh.results[i]
            exchanges = http.ANALYZER.run(c.db, params).exchanges
            for e, row in zip(exchanges, exchanges.rows().tolist()):
                rid = corr.request_of_row(row)
                r = corr.request(rid, e) if rid is not None else correlate.Request(-1, e, "")
                items.append((xh.aligned_ns(i, _when(e)) or 0, i, e.conn_id, e.stream_id or 0, e, r))
        items.sort(key=lambda t: t[:4])
        if as_json:
            echo_json([{**e.to_dict(), **r.row(), **({"request_id": None} if r.request_id < 0 else {}),
                        **xh.row(i, r)} for _, i, _, _, e, r in items])
            return
        starts = [w[0] - xh.clocks[i].offset_ns for i, c in enumerate(cs.captures)
                  if (w := c.window_wall_ns()) is not None]
        t0 = min(starts) if starts else min((t for t, *_ in items), default=0)
        rows = []
        for t, i, _, _, e, r in items:
            p = xh.peer(i, r) if r.request_id >= 0 else None
            rows.append((cs.captures[i].host or cs.captures[i].capture_id, "" if r.request_id < 0 else r.request_id,
                         f"{(t - t0) / 1e9:.3f}" if t else "", e.protocol + (" tls" if e.tls else ""), e.method,
                         _path(e), http.status_text(e), "" if e.latency_ns is None else f"{e.latency_ns / 1e6:.2f}",
                         e.req_bytes, e.resp_bytes, http.process_label(e.client_pid, e.client_comm),
                         http.process_label(e.server_pid, e.server_comm),
                         f"{cs.captures[p.capture].host or cs.captures[p.capture].capture_id} #{p.request.request_id}"
                         if p else ""))
        print_rows(COLUMNS, rows, fmt, title=f"{len(rows)} exchanges in {len(cs.captures)} captures, "
                   f"{len(xh.pairs)} paired across hosts")
