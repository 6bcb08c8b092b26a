"""sock_data rows scripted in code (a TCP connection whose syscalls a test writes),
written to Parquet and opened through DuckDB as the archive reader does: what the
HTTP analyzer tests feed the analyzer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from uetrace.analyze.http import batches, long_connections

SNAPLEN = 4096
SOCK_SCHEMA = pa.schema([
    ("cpu", pa.uint32()), ("ts_enter", pa.uint64()), ("ts_exit", pa.uint64()), ("sock_id", pa.uint64()),
    ("pid", pa.uint32()), ("tid", pa.uint32()), ("fd", pa.int32()), ("syscall", pa.uint16()),
    ("direction", pa.uint8()), ("bytes", pa.int64()), ("captured", pa.uint32()), ("family", pa.uint16()),
    ("protocol", pa.uint16()), ("laddr", pa.string()), ("raddr", pa.string()), ("lport", pa.uint16()),
    ("rport", pa.uint16()), ("payload", pa.binary()),
])
MS = 1_000_000


@dataclass
class Conn:
    """A TCP connection whose syscalls we script. Each `send` is one write at the sender and one read at
    the receiver, recorded for each end that is `captured`, payloads cut at the snaplen."""

    rows: list[dict]
    client: tuple[str, int] = ("10.0.0.1", 40000)
    server: tuple[str, int] = ("10.0.0.2", 8080)
    client_sock: int = 101
    server_sock: int = 202
    client_pid: int = 1000
    server_pid: int = 2000
    capture_client: bool = True
    capture_server: bool = True
    server_laddr: str | None = None  # e.g. "::ffff:10.0.0.2", a dual-stack server's view
    snaplen: int = SNAPLEN
    log: list = field(default_factory=list)

    def send(self, from_client: bool, data: bytes, ts: int, size: int | None = None) -> None:
        size = len(data) if size is None else size
        ends = [(True, self.capture_client), (False, self.capture_server)]
        for is_client, captured in ends:
            if not captured:
                continue
            sender = is_client == from_client
            local, remote = (self.client, self.server) if is_client else (self.server, self.client)
            laddr = local[0] if is_client or self.server_laddr is None else self.server_laddr
            raddr = remote[0] if not is_client or self.server_laddr is None else remote[0]
            if not is_client and self.server_laddr is not None:
                raddr = "::ffff:" + remote[0]
            cap = data[:min(size, self.snaplen)]
            self.rows.append({
                # a reader blocks before the data arrives: its entry time predates the write
                "cpu": 0, "ts_enter": ts if sender else ts - 50_000,
                "ts_exit": ts + 1000 if sender else ts + 20_000,
                "sock_id": self.client_sock if is_client else self.server_sock,
                "pid": self.client_pid if is_client else self.server_pid,
                "tid": (self.client_pid if is_client else self.server_pid) + 1, "fd": 5,
                "syscall": 2 if sender else 1, "direction": 0 if sender else 1, "bytes": size,
                "captured": len(cap), "family": 10 if (not is_client and self.server_laddr) else 2,
                "protocol": 6, "laddr": laddr, "raddr": raddr, "lport": local[1], "rport": remote[1],
                "payload": cap,
            })


def open_rows(tmp_path: Path, rows: list[dict], table: str = "sock_data",
              extra: dict[str, list[dict]] | None = None) -> duckdb.DuckDBPyConnection:
    """Write rows as a Parquet segment and open a DuckDB view over it, like the archive reader."""
    con = duckdb.connect()
    for name, rs in {table: rows, **(extra or {})}.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rs, schema=SOCK_SCHEMA), path)
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
    return con


def request(method: str, path: str, body: bytes = b"", chunked: bool = False, headers: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: example.test\r\n{headers}"
    if chunked:
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + _chunks(body)
    if body or method in ("POST", "PUT"):
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def response(status: int, body: bytes = b"", chunked: bool = False, headers: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nServer: t\r\n{headers}"
    if chunked:
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + _chunks(body)
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _chunks(body: bytes, size: int = 7) -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
    return out + b"0\r\n\r\n"


def keepalive(conn: Conn, pairs: list[tuple[bytes, bytes, int]], t0: int = 10 * MS) -> None:
    """Request, then response `delay` ns later, one pair after the other on one connection."""
    t = t0
    for req, resp, delay in pairs:
        conn.send(True, req, t)
        t += delay
        conn.send(False, resp, t)
        t += MS


class Loads:
    """What connection_batches hands out: pieces of long connections, long connections loaded whole."""

    def __init__(self, monkeypatch) -> None:  # pytest's fixture
        self.pieces = self.wholes = 0
        whole, pieces = batches._whole, long_connections.LongConnections.pieces

        def counted_whole(*args, **kwargs):
            self.wholes += 1
            return whole(*args, **kwargs)

        def counted_pieces(cut):
            for piece in pieces(cut):
                self.pieces += 1
                yield piece

        monkeypatch.setattr(batches, "_whole", counted_whole)
        monkeypatch.setattr(long_connections.LongConnections, "pieces", counted_pieces)
