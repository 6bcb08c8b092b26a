"""The http result as DuckDB tables (http_exchanges, http_websocket_frames, http_tls) for `trace query`."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from uetrace.analyze.http.result import HttpResult

_EXCHANGE_SCHEMA = pa.schema([
    ("conn_id", pa.int64()), ("protocol", pa.string()), ("client", pa.string()), ("server", pa.string()),
    ("method", pa.string()), ("path", pa.string()), ("host", pa.string()), ("status", pa.int32()),
    ("req_bytes", pa.int64()), ("resp_bytes", pa.int64()), ("start_ts", pa.uint64()), ("end_ts", pa.uint64()),
    ("latency_ns", pa.int64()), ("client_pid", pa.uint32()), ("client_tid", pa.uint32()),
    ("server_pid", pa.uint32()), ("server_tid", pa.uint32()), ("measured_at", pa.string()),
    ("complete", pa.bool_()), ("note", pa.string()), ("stream_id", pa.int64()), ("grpc_service", pa.string()),
    ("grpc_method", pa.string()), ("grpc_status", pa.int32()), ("grpc_message", pa.string()),
    ("tls", pa.bool_()), ("client_comm", pa.string()), ("server_comm", pa.string()),
    ("anomalies", pa.list_(pa.string())),
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
    frames: dict[str, list] = {name: [] for name in _FRAME_SCHEMA.names}
    for i, w in enumerate(result.websockets):
        for f in w.frames:
            row = {**f.to_dict(), "session": i, "conn_id": w.handshake.conn_id}
            for name in _FRAME_SCHEMA.names:
                frames[name].append(row[name])
    tls_rows = [t.to_dict() for t in result.tls]
    tables = {
        "http_exchanges": result.exchanges.table.select(_EXCHANGE_SCHEMA.names).cast(_EXCHANGE_SCHEMA),
        "http_websocket_frames": pa.table(frames, schema=_FRAME_SCHEMA),
        "http_tls": pa.Table.from_pylist(tls_rows, schema=_TLS_SCHEMA),
    }
    for name, table in tables.items():
        con.register("_uetrace_http_tmp", table)
        try:
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _uetrace_http_tmp")
        finally:
            con.unregister("_uetrace_http_tmp")
