"""The exchange: one request and its response, the unit every HTTP flavour's parser produces."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(slots=True)
class Exchange:
    """One request and its response, for every HTTP flavour (HTTP/2 and gRPC fill the stream and grpc
    fields). Timestamps are CLOCK_MONOTONIC ns at the end that was read (see `measured_at`): start is
    when the first request byte was in hand, end when the syscall carrying the last response byte
    returned. Sizes count header and body bytes on the wire, captured or not. `complete` means both
    messages were framed from first to last byte; body bytes beyond the snaplen, skipped by length,
    do not make an exchange incomplete (the capture never had them by design)."""

    protocol: str  # "http/1.1", "http/1.0", "h2", "grpc"
    conn_id: int
    client: str  # "addr:port"
    server: str
    method: str = ""
    path: str = ""
    host: str = ""
    status: int | None = None
    req_bytes: int = 0
    resp_bytes: int = 0
    start_ts: int | None = None
    end_ts: int | None = None
    latency_ns: int | None = None
    client_pid: int | None = None
    client_tid: int | None = None
    server_pid: int | None = None
    server_tid: int | None = None
    measured_at: str = "client"  # which end's syscalls timed the exchange
    complete: bool = True
    note: str = ""  # why incomplete, or why headers are unavailable
    stream_id: int | None = None
    grpc_service: str = ""
    grpc_method: str = ""
    grpc_status: int | None = None
    grpc_message: str = ""
    tls: bool = False  # plaintext came from the TLS tracer
    # Filled by the analyzer from the process snapshot (the parsers only know pids).
    client_comm: str = ""
    server_comm: str = ""
    # HTTP/1 framing anomalies of the request and response, as kinds from anomalies.py ("cl_and_te",
    # "desync", ...): what a strict RFC 9112 recipient would have refused or read differently.
    anomalies: list[str] = field(default_factory=list)
    # The request's W3C traceparent header, when a parser decoded it (h2 and gRPC: HPACK hides it from
    # a byte search; analyze/correlate reads HTTP/1's from the request bytes itself).
    traceparent: str = ""

    def to_dict(self) -> dict:
        return asdict(self)
