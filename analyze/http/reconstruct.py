"""Reconstruction: every connection of `sock_data` (and `tls_data`) through the protocol parsers.

`analyze_http(con, params, enums)` works on any DuckDB connection with a sock_data-shaped view, so tests and
the benchmark need no archive (without `enums`, the values of archives that carried none).
"""

from __future__ import annotations

import gc

import duckdb

from uetrace.analyze.enums import DEFAULT, Enums
from uetrace.analyze.http import http1, http2, pieces, tls, websocket
from uetrace.analyze.http.batches import DEFAULT_BATCH_ROWS, PlannedSocket, connection_batches, plan
from uetrace.analyze.http.connection import Connection, Socket, View
from uetrace.analyze.http.exchange_table import ExchangeTableBuilder
from uetrace.analyze.http.filters import filter_result
from uetrace.analyze.http.long_connections import LongConnection, Piece
from uetrace.analyze.http.result import HttpParams, HttpResult, TlsConnection


def analyze_http(con: duckdb.DuckDBPyConnection, params: HttpParams | None = None,
                 enums: Enums = DEFAULT, batch_rows: int = DEFAULT_BATCH_ROWS) -> HttpResult:
    """Reconstruct every HTTP/1, HTTP/2, gRPC, WebSocket and TLS connection from the `sock_data` view
    (and `tls_data` when the TLS tracer ran), then keep what params select. Never raises on payload
    content; a missing `sock_data` and `tls_data` gives an empty result with a note. Connections are
    read and parsed `batch_rows` rows at a time (batches.py): the result does not depend on it."""
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
        _analyze(con, views, result, enums, batch_rows)
    finally:
        if gc_was_enabled:
            gc.enable()
    return filter_result(result, params or HttpParams())


def _analyze(con: duckdb.DuckDBPyConnection, views: set[str], result: HttpResult, enums: Enums,
             batch_rows: int) -> None:
    roles = _roles_from_conn_records(con, enums) if "sock_conn" in views else {}
    ids: dict[tuple, int] = {}  # 4-tuple -> conn_id of the TLS tracer's connections
    # The TLS tracer's plaintext first: a connection it decrypted is read from it, and its encrypted
    # bytes in sock_data only give the TLS handshake facts (SNI, ALPN, version). Every conn id is
    # known from the plan, before any payload is read.
    tls_pairs = plan(con, "tls_data", "tls", enums) if "tls_data" in views else []
    tls_ids = [ids.setdefault(_conn_key(a), len(ids)) for a, _ in tls_pairs]
    decrypted = set(tls_ids)
    sock_pairs = plan(con, "sock_data", "sock", enums) if "sock_data" in views else []
    sock_ids = []
    next_id = len(ids)
    for a, _ in sock_pairs:
        # The socket of a connection the TLS tracer decrypted shares its id. (Should the kernel
        # reuse that 4-tuple within the capture, the later connection shares it too: rare enough.)
        conn_id = ids.get(_conn_key(a))
        if conn_id is None:
            conn_id, next_id = next_id, next_id + 1
        sock_ids.append(conn_id)
    result.connections = len(sock_pairs) if "sock_data" in views else len(decrypted)
    # Serial on purpose: a fork-based pool over connections was tried; pickling the results back and
    # copy-on-write faults on the shared streams cost ~25% more CPU, and on a busy 2-CPU host it lost.
    table = ExchangeTableBuilder()
    for table_name, source, pairs, conn_ids, plaintext in (("tls_data", "tls", tls_pairs, tls_ids, True),
                                                           ("sock_data", "sock", sock_pairs, sock_ids, False)):
        i = 0
        long = _LongParses(conn_ids, decrypted, plaintext)
        for batch in connection_batches(con, pairs, table_name, source, enums, batch_rows):
            for conn in batch:
                if isinstance(conn, Piece):
                    long.parse(conn, roles)
                    continue
                conn_id = conn_ids[i]
                i += 1
                tls_only = conn_id in decrypted and not plaintext
                if isinstance(conn, LongConnection):
                    parsed = long.take(conn.index)
                    if parsed is not None:
                        table.extend(parsed)
                        continue
                    _analyze_connection(conn.whole(), conn_id, roles, result, table, plaintext, tls_only)
                else:
                    _analyze_connection(conn, conn_id, roles, result, table, plaintext, tls_only)
            table.flush()  # as columns: the batch's objects go with it
    result.exchanges = table.finish()
    for t in result.tls:
        t.decrypted = t.conn_id in decrypted


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def _roles_from_conn_records(con: duckdb.DuckDBPyConnection, enums: Enums) -> dict[int, bool]:
    """sock_id -> is the client end, from the socket tracer's connect (client) and accept (server)
    records, when the capture has them. Content decides when it is clear; this breaks ties."""
    accept = enums.value("sock_conn", "ue_sock_conn_op", "CONN_ACCEPT")
    connect = enums.value("sock_conn", "ue_sock_conn_op", "CONN_CONNECT")
    try:
        rows = con.execute("SELECT DISTINCT sock_id, op FROM sock_conn WHERE op IN (?, ?)",
                           [accept, connect]).fetchall()
    except duckdb.Error:
        return {}
    return {sock_id: op == connect for sock_id, op in rows}


def _conn_key(s: Socket | PlannedSocket) -> tuple:
    return tuple(sorted((s.local, s.remote)))


class _LongParses:
    """The long connections' pieces parsed as they come (long_connections.py), each connection's
    exchanges kept as columns until its place in the plan. A connection whose piece is not HTTP/1 or
    does not parse perfectly is dropped: it is read whole at its place. Indexes are plan positions."""

    def __init__(self, conn_ids: list[int], decrypted: set[int], plaintext: bool) -> None:
        self.conn_ids, self.decrypted, self.plaintext = conn_ids, decrypted, plaintext
        self.tables: dict[int, ExchangeTableBuilder] = {}
        self.reading: dict[int, tuple[int, bool]] = {}  # index -> (end read, is it the client)
        self.failed: set[int] = set()

    def parse(self, piece: Piece, roles: dict[int, bool]) -> None:
        if piece.index in self.failed:
            return
        try:
            ok = self._parse(piece, roles)
        except Exception:  # the whole connection's parse says what went wrong
            ok = False
        if not ok:
            self.failed.add(piece.index)
            self.tables.pop(piece.index, None)
            piece.drop(piece.index)

    def _parse(self, piece: Piece, roles: dict[int, bool]) -> bool:
        i, conn, plaintext = piece.index, piece.connection, self.plaintext
        conn_id = self.conn_ids[i]
        if i not in self.reading:  # the end to read and the roles: decided on the first piece
            view = _choose_view(conn, roles, piece.nbytes)
            if not _http1_only(view, plaintext, conn_id in self.decrypted and not plaintext):
                return False
            self.reading[i] = (0 if _same_end(view.conn.sock, conn.sock) else 1, view.at_client)
        else:
            end, at_client = self.reading[i]
            view = View.of(conn, conn.sock if end == 0 else conn.peer, at_client)  # type: ignore[arg-type]
        exchanges, switch = http1.parse_columns(view, conn_id, tls=plaintext)
        if switch is not None or not pieces.perfect(exchanges, view.requests.length, view.responses.length):
            return False
        self.tables.setdefault(i, ExchangeTableBuilder()).add(exchanges)
        return True

    def take(self, index: int) -> ExchangeTableBuilder | None:
        """The connection's exchanges, if it was read in pieces and every piece parsed perfectly."""
        if index in self.failed:
            return None
        return self.tables.pop(index, None)


def _same_end(a: Socket, b: Socket) -> bool:
    return (a.sock_id, a.local, a.remote) == (b.sock_id, b.local, b.remote)


def _http1_only(view: View, plaintext: bool, tls_only: bool) -> bool:
    """Whether _dispatch would read the connection as HTTP/1 from its start."""
    req, resp = view.requests, view.responses
    if not plaintext and (tls_only or tls.detect(req, resp) is not None):
        return False
    return not http2.starts_with_preface(req) and (http1.looks_like_requests(req) or http1.looks_like_responses(resp))


def _choose_view(conn: Connection, roles: dict[int, bool], nbytes: tuple[int, int] | None = None) -> View:
    """Decide which end is the client, from what each end sent, then pick the end to read: the
    client's (latency as the client saw it) unless the server's capture holds more of the bytes
    (`nbytes`: of conn.sock and conn.peer over the whole connection, when conn is its first piece)."""
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
    def size(s: Socket) -> int:
        return _bytes(s) if nbytes is None else nbytes[0 if s is conn.sock else 1]

    if client is not None and (server is None or size(client) >= size(server)):
        return View.of(conn, client, True)
    assert server is not None
    return View.of(conn, server, False)


def _opens_connection(stream) -> bool:
    return (tls.client_hello_in(stream) or http2.starts_with_preface(stream)
            or http1.looks_like_requests(stream))


def _bytes(s: Socket) -> int:
    return s.egress.length + s.ingress.length


def _analyze_connection(conn: Connection, conn_id: int, roles: dict[int, bool], result: HttpResult,
                        found: ExchangeTableBuilder, plaintext: bool, tls_only: bool = False) -> None:
    """The connection's exchanges into `found`; its WebSocket sessions, TLS facts and notes into result."""
    try:
        view = _choose_view(conn, roles)
        _dispatch(view, conn_id, result, found, plaintext, tls_only)
    except Exception as e:  # a parser bug costs one connection, never the analysis
        result.notes.append(f"connection {conn_id}: unparsed ({type(e).__name__}: {e})")


def _dispatch(view: View, conn_id: int, result: HttpResult, found: ExchangeTableBuilder, plaintext: bool,
              tls_only: bool = False) -> None:
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
        found.add(http2.exchanges(view, conn_id, tls=plaintext))
        return
    if http1.looks_like_requests(req) or http1.looks_like_responses(resp):
        columns, switched = http1.parse_columns(view, conn_id, tls=plaintext)
        if switched is None:
            found.add(columns)
            return
        exchanges = columns.objects()  # the switching exchange is noted and read on
        found.add(exchanges)
        switch = http1.Switch(*switched, exchanges[-1])
        if switch.protocol == "websocket":
            result.websockets.append(websocket.parse_session(switch.exchange, req, switch.request_end, resp,
                                                             switch.response_end))
        elif switch.protocol == "h2c":
            found.add(http2.exchanges(view, conn_id, switch.request_end, switch.response_end,
                                      tls=plaintext, upgrade=switch.exchange))
        else:
            switch.exchange.note = switch.exchange.note or f"switched to {switch.protocol}: not decoded"
        return
    if http2.looks_like_frames(req) or http2.looks_like_frames(resp):
        found.add(http2.exchanges(view, conn_id, tls=plaintext))
        return
    result.unrecognized += 1
